// The benchmark's report (see report.hpp): tables from cell.json objects, plots drawn
// with OpenCV's primitives, and one HTML page.
#include "retclip/eval/report.hpp"

#include <fmt/format.h>

#include <opencv2/imgproc.hpp>
#ifdef RETCLIP_WITH_IMGCODECS
#include <opencv2/imgcodecs.hpp>
#endif

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

namespace retclip::eval {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

double report_num(const json& j, const std::string& key) {
  if (!j.is_object() || !j.contains(key) || !j.at(key).is_number())
    return std::numeric_limits<double>::quiet_NaN();
  return j.at(key).get<double>();
}

std::string report_fmt(double v) {
  return std::isfinite(v) ? fmt::format("{:.4f}", v) : std::string();
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else if (c == '&')
      out += "&amp;";
    else if (c == '"')
      out += "&quot;";
    else
      out += c;
  }
  return out;
}

bool cell_done(const json& c) {
  return c.value("status", "") == "done";
}

int64_t cell_shots(const json& c) {
  return c.value("shots", int64_t{0});
}

/// A file-name-safe spelling of a name.
std::string report_slug(const std::string& s) {
  std::string out;
  for (char c : s) out += std::isalnum(static_cast<unsigned char>(c)) || c == '-' ? c : '_';
  return out;
}

/// Protocol groups in table order: (protocol, K).
std::vector<std::pair<std::string, int64_t>> protocol_groups(const std::vector<json>& cells) {
  std::vector<std::pair<std::string, int64_t>> out;
  for (const char* p : {"probe", "few-shot", "zero-shot", "finetune"}) {
    std::set<int64_t> ks;
    for (const auto& c : cells)
      if (c.value("protocol", "") == p) ks.insert(cell_shots(c));
    for (int64_t k : ks) out.emplace_back(p, k);
  }
  return out;
}

}  // namespace

const std::vector<std::pair<std::string, std::string>>& report_metrics() {
  static const std::vector<std::pair<std::string, std::string>> m = {{"auroc", "AUROC (macro)"},
                                                                     {"aupr", "AUPR (macro)"},
                                                                     {"f1", "F1 (macro)"},
                                                                     {"kappa", "Cohen's kappa"}};
  return m;
}

std::string protocol_label(const std::string& protocol, int64_t shots) {
  if (protocol == "probe") return "linear probe";
  if (protocol == "few-shot") return fmt::format("{}-shot", shots);
  if (protocol == "finetune") return "fine-tune";
  return protocol;
}

std::string results_csv(const std::vector<json>& cells) {
  std::string out = "model,set,protocol,k,seed,status,task,level,n_test";
  for (const auto& [m, _] : report_metrics()) out += fmt::format(",{0},{0}_lo,{0}_hi", m);
  out += ",train_hash,val_hash,test_hash,split_seed,seconds,error\n";
  for (const auto& c : cells) {
    out += fmt::format("{},{},{},{},{},{},{},{},{}", csv_field(c.value("model", "")),
                       csv_field(c.value("set", "")), c.value("protocol", ""), cell_shots(c),
                       c.value("seed", uint64_t{0}), c.value("status", ""), c.value("task", ""),
                       c.value("level", ""),
                       c.contains("n_test") ? std::to_string(c.at("n_test").get<int64_t>()) : "");
    const json metrics = c.value("metrics", json::object());
    const json ci = c.value("ci95", json::object());
    for (const auto& [m, _] : report_metrics()) {
      std::string lo, hi;
      if (ci.contains(m) && ci.at(m).is_array() && ci.at(m).size() == 2 &&
          ci.at(m)[0].is_number()) {
        lo = report_fmt(ci.at(m)[0].get<double>());
        hi = report_fmt(ci.at(m)[1].get<double>());
      }
      out += fmt::format(",{},{},{}", report_fmt(report_num(metrics, m)), lo, hi);
    }
    const json splits = c.value("splits", json::object());
    auto hash = [&](const char* s) {
      return splits.contains(s) ? splits.at(s).value("ids_hash", "") : std::string();
    };
    out += fmt::format(
        ",{},{},{},{},{:.2f},{}\n", hash("train"), hash("val"), hash("test"),
        splits.contains("seed") ? std::to_string(splits.at("seed").get<uint64_t>()) : "",
        c.value("seconds", 0.0), csv_field(c.value("error", "")));
  }
  return out;
}

ResultTable result_table(const std::vector<json>& cells, const std::vector<std::string>& models,
                         const std::vector<std::string>& sets, const std::string& metric) {
  ResultTable t;
  t.metric = metric;
  for (const auto& [m, title] : report_metrics())
    if (m == metric) t.title = title;
  t.rows = sets;
  const auto groups = protocol_groups(cells);
  std::vector<std::pair<size_t, std::string>> cols;  // (group, model)
  for (size_t g = 0; g < groups.size(); ++g)
    for (const auto& m : models) {
      bool any = false;
      for (const auto& c : cells)
        any |= c.value("model", "") == m && c.value("protocol", "") == groups[g].first &&
               cell_shots(c) == groups[g].second;
      if (!any) continue;
      cols.emplace_back(g, m);
      t.columns.emplace_back(protocol_label(groups[g].first, groups[g].second), m);
    }
  for (const auto& s : sets) {
    std::vector<std::string> text;
    std::vector<double> means;
    for (const auto& [g, m] : cols) {
      std::vector<double> xs;
      int64_t n = 0, failed = 0, pending = 0;
      for (const auto& c : cells) {
        if (c.value("model", "") != m || c.value("set", "") != s ||
            c.value("protocol", "") != groups[g].first || cell_shots(c) != groups[g].second)
          continue;
        ++n;
        if (!cell_done(c)) {
          (c.value("status", "") == "failed" ? failed : pending) += 1;
          continue;
        }
        const double v = report_num(c.value("metrics", json::object()), metric);
        if (std::isfinite(v)) xs.push_back(v);
      }
      double mean = std::numeric_limits<double>::quiet_NaN();
      if (xs.empty()) {
        text.push_back(n > 0 && failed + pending == n ? (failed ? "failed" : "not run") : "–");
      } else {
        mean = 0;
        for (double x : xs) mean += x;
        mean /= static_cast<double>(xs.size());
        double var = 0;
        for (double x : xs) var += (x - mean) * (x - mean);
        const double sd = std::sqrt(var / static_cast<double>(xs.size()));
        text.push_back(xs.size() > 1 ? fmt::format("{:.3f} ± {:.3f}", mean, sd)
                                     : fmt::format("{:.3f}", mean));
        if (failed) text.back() += fmt::format(" ({} failed)", failed);
        if (pending) text.back() += fmt::format(" ({} not run)", pending);
      }
      means.push_back(mean);
    }
    std::vector<bool> bold(cols.size(), false);
    for (size_t g = 0; g < groups.size(); ++g) {
      double best = -std::numeric_limits<double>::infinity();
      int64_t with_value = 0;
      for (size_t i = 0; i < cols.size(); ++i)
        if (cols[i].first == g && std::isfinite(means[i]))
          best = std::max(best, means[i]), ++with_value;
      if (with_value < 2) continue;  // nothing to compare
      for (size_t i = 0; i < cols.size(); ++i)
        if (cols[i].first == g && std::isfinite(means[i]) && means[i] == best) bold[i] = true;
    }
    t.text.push_back(text);
    t.bold.push_back(bold);
  }
  return t;
}

std::string table_markdown(const ResultTable& t) {
  std::string out = "| set |";
  for (const auto& [p, m] : t.columns) out += fmt::format(" {} · {} |", p, m);
  out += "\n| --- |";
  for (size_t i = 0; i < t.columns.size(); ++i) out += " ---: |";
  out += "\n";
  for (size_t r = 0; r < t.rows.size(); ++r) {
    out += "| " + t.rows[r] + " |";
    for (size_t i = 0; i < t.columns.size(); ++i)
      out += t.bold[r][i] ? " **" + t.text[r][i] + "** |" : " " + t.text[r][i] + " |";
    out += "\n";
  }
  return out;
}

std::string table_html(const ResultTable& t) {
  std::string out = "<table>\n<tr><th rowspan=\"2\">set</th>";
  // The protocol spans its models' columns.
  for (size_t i = 0; i < t.columns.size();) {
    size_t j = i;
    while (j < t.columns.size() && t.columns[j].first == t.columns[i].first) ++j;
    out += fmt::format("<th colspan=\"{}\">{}</th>", j - i, html_escape(t.columns[i].first));
    i = j;
  }
  out += "</tr>\n<tr>";
  for (const auto& [p, m] : t.columns) out += "<th>" + html_escape(m) + "</th>";
  out += "</tr>\n";
  for (size_t r = 0; r < t.rows.size(); ++r) {
    out += "<tr><th>" + html_escape(t.rows[r]) + "</th>";
    for (size_t i = 0; i < t.columns.size(); ++i)
      out += t.bold[r][i] ? "<td><b>" + html_escape(t.text[r][i]) + "</b></td>"
                          : "<td>" + html_escape(t.text[r][i]) + "</td>";
    out += "</tr>\n";
  }
  return out + "</table>\n";
}

// ---- plots ----------------------------------------------------------------------------

namespace {

// Tableau's ten colours (BGR), distinguishable in print and for most colour-blind readers.
const cv::Scalar kPalette[] = {{180, 119, 31},  {14, 127, 255}, {44, 160, 44},   {40, 39, 214},
                               {189, 103, 148}, {75, 86, 140},  {194, 119, 227}, {127, 127, 127},
                               {34, 189, 188},  {207, 190, 23}};
constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;

void plot_text(cv::Mat& img, const std::string& s, cv::Point at, double scale, int thickness = 1,
               cv::Scalar color = {0, 0, 0}) {
  cv::putText(img, s, at, kFont, scale, color, thickness, cv::LINE_AA);
}

cv::Size text_size(const std::string& s, double scale, int thickness = 1) {
  int base = 0;
  return cv::getTextSize(s, kFont, scale, thickness, &base);
}

// `phase` (pixels) shifts where the dashes start, so that dashed lines drawn over one
// another (two models with the same full-probe AUROC) each show their colour.
void dashed_line(cv::Mat& img, cv::Point2d a, cv::Point2d b, cv::Scalar color, int thickness,
                 double phase = 0) {
  const double len = std::hypot(b.x - a.x, b.y - a.y);
  const double dash = 9, gap = 6;
  for (double s = -std::fmod(phase, dash + gap); s < len; s += dash + gap) {
    const double from = std::max(s, 0.0), e = std::min(len, s + dash);
    if (e <= from) continue;
    cv::Point2d p = a + (b - a) * (from / len), q = a + (b - a) * (e / len);
    cv::line(img, cv::Point(cvRound(p.x), cvRound(p.y)), cv::Point(cvRound(q.x), cvRound(q.y)),
             color, thickness, cv::LINE_AA);
  }
}

std::vector<std::pair<double, std::string>> unit_ticks() {
  std::vector<std::pair<double, std::string>> t;
  for (int i = 0; i <= 5; ++i) t.emplace_back(i * 0.2, fmt::format("{:.1f}", i * 0.2));
  return t;
}

/// Cuts `s` to fit `width` pixels at `scale`, with an ellipsis.
std::string fit_text(std::string s, int width, double scale) {
  if (text_size(s, scale).width <= width) return s;
  while (!s.empty() && text_size(s + "...", scale).width > width) s.pop_back();
  return s + "...";
}

}  // namespace

void draw_plot(const Plot& p, const fs::path& png) {
  constexpr int kW = 1000, kH = 640, kLeft = 84, kTop = 78, kPlotW = 560, kPlotH = 480;
  cv::Mat img(kH, kW, CV_8UC3, cv::Scalar(255, 255, 255));
  auto px = [&](double x, double y) {
    const double fx = (x - p.x_min) / (p.x_max - p.x_min);
    const double fy = (y - p.y_min) / (p.y_max - p.y_min);
    return cv::Point2d(kLeft + fx * kPlotW, kTop + (1 - fy) * kPlotH);
  };
  auto ipt = [](cv::Point2d q) { return cv::Point(cvRound(q.x), cvRound(q.y)); };
  plot_text(img, fit_text(p.title, kW - 40, 0.75), {20, 32}, 0.75, 2);
  if (!p.subtitle.empty())
    plot_text(img, fit_text(p.subtitle, kW - 40, 0.5), {20, 56}, 0.5, 1, {80, 80, 80});
  // Grid and ticks.
  const auto xt = p.x_ticks.empty() ? unit_ticks() : p.x_ticks;
  const auto yt = p.y_ticks.empty() ? unit_ticks() : p.y_ticks;
  for (const auto& [v, label] : xt) {
    const cv::Point a = ipt(px(v, p.y_min)), b = ipt(px(v, p.y_max));
    cv::line(img, a, b, {232, 232, 232}, 1);
    cv::line(img, a, a + cv::Point(0, 6), {0, 0, 0}, 1);
    const cv::Size s = text_size(label, 0.5);
    plot_text(img, label, {a.x - s.width / 2, a.y + 24}, 0.5);
  }
  for (const auto& [v, label] : yt) {
    const cv::Point a = ipt(px(p.x_min, v)), b = ipt(px(p.x_max, v));
    cv::line(img, a, b, {232, 232, 232}, 1);
    cv::line(img, a, a - cv::Point(6, 0), {0, 0, 0}, 1);
    const cv::Size s = text_size(label, 0.5);
    plot_text(img, label, {a.x - 10 - s.width, a.y + s.height / 2}, 0.5);
  }
  cv::rectangle(img, {kLeft, kTop}, {kLeft + kPlotW, kTop + kPlotH}, {0, 0, 0}, 1);
  // Axis labels: x centred below, y written upwards beside the ticks.
  const cv::Size xs = text_size(p.x_label, 0.6);
  plot_text(img, p.x_label, {kLeft + kPlotW / 2 - xs.width / 2, kTop + kPlotH + 56}, 0.6);
  {
    const cv::Size ys = text_size(p.y_label, 0.6);
    cv::Mat label(ys.height + 10, ys.width + 4, CV_8UC3, cv::Scalar(255, 255, 255));
    plot_text(label, p.y_label, {2, ys.height + 2}, 0.6);
    cv::Mat up;
    cv::rotate(label, up, cv::ROTATE_90_COUNTERCLOCKWISE);
    const int x0 = 14, y0 = kTop + kPlotH / 2 - up.rows / 2;
    if (y0 >= 0 && y0 + up.rows <= kH) up.copyTo(img(cv::Rect(x0, y0, up.cols, up.rows)));
  }
  if (p.diagonal) dashed_line(img, px(p.x_min, p.y_min), px(p.x_max, p.y_max), {150, 150, 150}, 1);
  // Curves, clipped to the plot area.
  cv::Mat area = img(cv::Rect(kLeft, kTop, kPlotW + 1, kPlotH + 1));
  const cv::Point2d off(kLeft, kTop);
  int dashed_seen = 0;
  for (size_t i = 0; i < p.curves.size(); ++i) {
    const auto& c = p.curves[i];
    const cv::Scalar color = kPalette[(c.color >= 0 ? c.color : static_cast<int>(i)) % 10];
    std::vector<cv::Point2d> pts;
    std::vector<size_t> at;
    for (size_t k = 0; k < c.x.size() && k < c.y.size(); ++k)
      if (std::isfinite(c.x[k]) && std::isfinite(c.y[k]))
        pts.push_back(px(c.x[k], c.y[k]) - off), at.push_back(k);
    const double phase = c.dashed ? 7.5 * dashed_seen++ : 0;
    for (size_t k = 1; k < pts.size(); ++k) {
      if (c.dashed)
        dashed_line(area, pts[k - 1], pts[k], color, 2, phase);
      else
        cv::line(area, ipt(pts[k - 1]), ipt(pts[k]), color, 2, cv::LINE_AA);
    }
    for (size_t k = 0; k < pts.size(); ++k) {
      if (c.markers) cv::circle(area, ipt(pts[k]), 5, color, cv::FILLED, cv::LINE_AA);
      if (at[k] < c.err.size() && std::isfinite(c.err[at[k]]) && c.err[at[k]] > 0) {
        const double x = c.x[at[k]], y = c.y[at[k]], e = c.err[at[k]];
        const cv::Point lo = ipt(px(x, y - e) - off), hi = ipt(px(x, y + e) - off);
        cv::line(area, lo, hi, color, 2, cv::LINE_AA);
        cv::line(area, lo - cv::Point(6, 0), lo + cv::Point(6, 0), color, 2, cv::LINE_AA);
        cv::line(area, hi - cv::Point(6, 0), hi + cv::Point(6, 0), color, 2, cv::LINE_AA);
      }
    }
  }
  // Legend on the right, outside the data.
  const int lx = kLeft + kPlotW + 24, lw = kW - lx - 12;
  int ly = kTop + 8;
  plot_text(img, "legend", {lx, ly + 4}, 0.5, 1, {80, 80, 80});
  ly += 24;
  for (size_t i = 0; i < p.curves.size(); ++i) {
    const auto& c = p.curves[i];
    const cv::Scalar color = kPalette[(c.color >= 0 ? c.color : static_cast<int>(i)) % 10];
    if (c.dashed)
      dashed_line(img, cv::Point2d(lx, ly - 5), cv::Point2d(lx + 34, ly - 5), color, 2);
    else
      cv::line(img, {lx, ly - 5}, {lx + 34, ly - 5}, color, 2, cv::LINE_AA);
    if (c.markers) cv::circle(img, {lx + 17, ly - 5}, 5, color, cv::FILLED, cv::LINE_AA);
    plot_text(img, fit_text(c.label, lw - 44, 0.5), {lx + 42, ly}, 0.5);
    if (!c.note.empty()) {
      ly += 20;
      plot_text(img, fit_text(c.note, lw - 44, 0.45), {lx + 42, ly}, 0.45, 1, {90, 90, 90});
    }
    ly += 28;
  }
  if (p.diagonal) {
    dashed_line(img, cv::Point2d(lx, ly - 5), cv::Point2d(lx + 34, ly - 5), {150, 150, 150}, 1);
    plot_text(img, "chance", {lx + 42, ly}, 0.5, 1, {80, 80, 80});
  }
  fs::create_directories(png.parent_path().empty() ? fs::path(".") : png.parent_path());
#ifdef RETCLIP_WITH_IMGCODECS
  std::vector<uchar> buf;
  RETCLIP_CHECK(cv::imencode(".png", img, buf), "could not encode the plot ", png.string());
  util::write_file_atomic(png, std::string(buf.begin(), buf.end()));
#else
  throw UsageError(str_cat("cannot write the plot ", png.string(),
                           ": this build has no image encoding. HINT: reconfigure with "
                           "-DRETCLIP_WITH_IMGCODECS=ON"));
#endif
}

// ---- the whole report -------------------------------------------------------------------

namespace {

/// The first done cell of (model, set, protocol, K) in seed order.
const json* first_done(const std::vector<json>& cells, const std::string& model,
                       const std::string& set, const std::string& protocol, int64_t shots) {
  for (const auto& c : cells)
    if (cell_done(c) && c.value("model", "") == model && c.value("set", "") == set &&
        c.value("protocol", "") == protocol && cell_shots(c) == shots)
      return &c;
  return nullptr;
}

/// Area under a step-wise ROC (trapezoids between its points).
double curve_area(const std::vector<double>& x, const std::vector<double>& y) {
  double a = 0;
  for (size_t i = 1; i < x.size() && i < y.size(); ++i)
    a += (x[i] - x[i - 1]) * (y[i] + y[i - 1]) / 2;
  return a;
}

std::vector<std::string> report_plots(const std::vector<json>& cells,
                                      const std::vector<std::string>& models,
                                      const std::vector<std::string>& sets, const fs::path& dir) {
  std::vector<std::string> files;
  const auto groups = protocol_groups(cells);
  for (const auto& s : sets) {
    // ROC per protocol (few-shot: the largest K), the first seed's test split.
    int64_t max_k = 0;
    for (const auto& [p, k] : groups)
      if (p == "few-shot") max_k = std::max(max_k, k);
    for (const auto& [p, k] : groups) {
      if (p == "few-shot" && k != max_k) continue;
      Plot plot;
      plot.diagonal = true;
      plot.x_label = "false positive rate (1 - specificity)";
      plot.y_label = "true positive rate (sensitivity)";
      std::string curve_kind, unit = "rows";
      int64_t n_test = 0;
      for (size_t m = 0; m < models.size(); ++m) {
        const json* c = first_done(cells, models[m], s, p, k);
        if (!c || !c->contains("roc")) continue;
        const json& roc = c->at("roc");
        PlotCurve pc;
        pc.x = roc.at("fpr").get<std::vector<double>>();
        pc.y = roc.at("tpr").get<std::vector<double>>();
        pc.color = static_cast<int>(m);
        curve_kind = roc.value("curve", "");
        // The area of a micro-averaged curve is not the macro AUROC of the tables: say
        // both (of this seed; the table has the mean over seeds).
        const double macro = report_num(c->value("metrics", json::object()), "auroc");
        const bool micro = curve_kind.rfind("micro", 0) == 0;
        pc.label = fmt::format("{} (area {:.3f})", models[m], curve_area(pc.x, pc.y));
        if (micro && std::isfinite(macro))
          pc.note =
              fmt::format("macro AUROC {:.3f}, seed {}", macro, c->value("seed", uint64_t{0}));
        n_test = c->value("n_test", int64_t{0});
        unit = c->value("level", "") == "patient" ? "patients"
               : c->value("level", "") == "eye"   ? "images"
                                                  : "rows";
        plot.curves.push_back(std::move(pc));
      }
      if (plot.curves.empty()) continue;
      plot.title = fmt::format("{}: ROC, {}", s, protocol_label(p, k));
      plot.subtitle = fmt::format("test split, {} {}; {}{}", n_test, unit, curve_kind,
                                  p == "few-shot" || p == "finetune" ? "; first seed" : "");
      const std::string name =
          fmt::format("plots/roc-{}-{}.png", report_slug(s), report_slug(protocol_label(p, k)));
      draw_plot(plot, dir / name);
      files.push_back(name);
    }
    // Few-shot: macro AUROC against K, mean +- std over seeds; the full probe dashed.
    std::vector<int64_t> ks;
    for (const auto& [p, k] : groups)
      if (p == "few-shot") ks.push_back(k);
    if (ks.empty()) continue;
    Plot plot;
    plot.title = fmt::format("{}: few-shot linear probe", s);
    plot.subtitle =
        "test macro AUROC, mean +- std over seeds (models side by side at each K); dashed: the "
        "probe on all training rows";
    plot.x_label = "K (training rows per class, log scale)";
    plot.y_label = "macro AUROC";
    auto xpos = [](int64_t k) { return std::log2(static_cast<double>(k)); };
    plot.x_min = xpos(ks.front()) - 0.5;
    plot.x_max = xpos(ks.back()) + 0.5;
    for (int64_t k : ks) plot.x_ticks.emplace_back(xpos(k), std::to_string(k));
    double lo = 1, hi = 0;
    for (size_t m = 0; m < models.size(); ++m) {
      PlotCurve pc;
      pc.label = models[m];
      pc.markers = true;
      pc.color = static_cast<int>(m);
      for (int64_t k : ks) {
        std::vector<double> xs;
        for (const auto& c : cells)
          if (cell_done(c) && c.value("model", "") == models[m] && c.value("set", "") == s &&
              c.value("protocol", "") == "few-shot" && cell_shots(c) == k) {
            const double v = report_num(c.at("metrics"), "auroc");
            if (std::isfinite(v)) xs.push_back(v);
          }
        double mean = std::numeric_limits<double>::quiet_NaN(), sd = 0;
        if (!xs.empty()) {
          mean = 0;
          for (double x : xs) mean += x;
          mean /= static_cast<double>(xs.size());
          for (double x : xs) sd += (x - mean) * (x - mean);
          sd = std::sqrt(sd / static_cast<double>(xs.size()));
          lo = std::min(lo, mean - sd);
          hi = std::max(hi, mean + sd);
        }
        // Models side by side around K, so that their error bars do not hide each other.
        const double dodge =
            0.08 * (static_cast<double>(m) - (static_cast<double>(models.size()) - 1) / 2);
        pc.x.push_back(xpos(k) + dodge);
        pc.y.push_back(mean);
        pc.err.push_back(sd);
      }
      const bool any =
          std::any_of(pc.y.begin(), pc.y.end(), [](double v) { return std::isfinite(v); });
      if (any) plot.curves.push_back(pc);
      if (const json* full = first_done(cells, models[m], s, "probe", 0)) {
        const double v = report_num(full->at("metrics"), "auroc");
        if (any && std::isfinite(v)) {
          PlotCurve fc;
          fc.label = models[m] + ", full probe";
          fc.dashed = true;
          fc.color = static_cast<int>(m);
          fc.x = {plot.x_min, plot.x_max};
          fc.y = {v, v};
          plot.curves.push_back(fc);
          lo = std::min(lo, v);
          hi = std::max(hi, v);
        }
      }
    }
    if (plot.curves.empty()) continue;
    // y range: the data with a margin, on a 0.05 grid, within [0, 1].
    plot.y_min = std::max(0.0, std::floor((lo - 0.03) * 20) / 20);
    plot.y_max = std::min(1.0, std::ceil((hi + 0.03) * 20) / 20);
    if (plot.y_max - plot.y_min < 0.1) plot.y_max = std::min(1.0, plot.y_min + 0.1);
    if (plot.y_max - plot.y_min < 0.1) plot.y_min = plot.y_max - 0.1;
    const double step = plot.y_max - plot.y_min > 0.5 ? 0.1 : 0.05;
    for (double v = plot.y_min; v <= plot.y_max + 1e-9; v += step)
      plot.y_ticks.emplace_back(v, fmt::format("{:.2f}", v));
    const std::string name = fmt::format("plots/fewshot-{}.png", report_slug(s));
    draw_plot(plot, dir / name);
    files.push_back(name);
  }
  return files;
}

}  // namespace

std::vector<std::string> write_report(const std::vector<json>& cells,
                                      const std::vector<std::string>& models,
                                      const std::vector<std::string>& sets, const json& meta,
                                      const fs::path& dir) {
  fs::create_directories(dir);
  util::write_file_atomic(dir / "results.csv", results_csv(cells));
  json rows = json::array();
  for (const auto& c : cells) {
    json r = c;
    r.erase("roc");  // the curve's points stay in the cell's cell.json
    rows.push_back(r);
  }
  util::write_file_atomic(dir / "results.json", json{{"benchmark", meta}, {"cells", rows}}.dump(2));
  int64_t done = 0, failed = 0;
  for (const auto& c : cells) {
    done += cell_done(c);
    failed += c.value("status", "") == "failed";
  }
  const int64_t not_run = static_cast<int64_t>(cells.size()) - done - failed;
  const std::string head = fmt::format(
      "{} cells: {} done, {} failed{}. Test split of each set; mean ± std over seeds (population), "
      "a single value for one seed; bold: the best model of a protocol on that set; –: no "
      "such cell (zero-shot needs a text tower and a set with a prompt file; kappa applies "
      "to single-label sets).",
      cells.size(), done, failed,
      not_run ? fmt::format(", {} not run yet (run the benchmark again)", not_run) : "");
  std::string md = "# Benchmark\n\n" + head + "\n";
  for (const auto& [m, title] : report_metrics())
    md += "\n## " + title + "\n\n" + table_markdown(result_table(cells, models, sets, m));
  std::vector<std::pair<std::string, std::string>> failures;
  for (const auto& c : cells)
    if (c.value("status", "") == "failed")
      failures.emplace_back(
          fmt::format("{} / {} / {} / seed {}", c.value("model", ""), c.value("set", ""),
                      protocol_label(c.value("protocol", ""), cell_shots(c)),
                      c.value("seed", uint64_t{0})),
          c.value("error", ""));
  if (!failures.empty()) {
    md += "\n## Failed cells\n\n";
    for (const auto& [what, why] : failures) md += "- " + what + ": " + why + "\n";
  }
  util::write_file_atomic(dir / "results.md", md);

  const std::vector<std::string> plots = report_plots(cells, models, sets, dir);
  std::string html =
      "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>retclip benchmark</title>\n"
      "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
      "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #bbb;padding:4px 8px}"
      "td{text-align:right}img{max-width:100%;margin:0.5em 0;border:1px solid #ddd}</style>"
      "</head><body>\n<h1>Benchmark</h1>\n<p>" +
      html_escape(head) + "</p>\n";
  for (const auto& [m, title] : report_metrics())
    html +=
        "<h2>" + html_escape(title) + "</h2>\n" + table_html(result_table(cells, models, sets, m));
  if (!failures.empty()) {
    html += "<h2>Failed cells</h2>\n<ul>\n";
    for (const auto& [what, why] : failures)
      html += "<li>" + html_escape(what) + ": " + html_escape(why) + "</li>\n";
    html += "</ul>\n";
  }
  html += "<h2>Plots</h2>\n";
  for (const auto& f : plots) html += "<img src=\"" + f + "\" alt=\"" + f + "\">\n";
  html += "<p>Every number: results.csv / results.json; every cell: cells/.</p>\n</body></html>\n";
  util::write_file_atomic(dir / "report.html", html);
  return plots;
}

}  // namespace retclip::eval
