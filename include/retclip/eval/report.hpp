// What `retclip benchmark` writes from its cells (eval/benchmark.hpp): results.csv and
// results.json (one row per cell), the RETFound-style table (results.md: sets as rows,
// protocol x model columns, mean +- std over seeds, the best model of a protocol in bold),
// PNG plots drawn with OpenCV (ROC curves, few-shot curves) and report.html. No tensors:
// a cell is the JSON object its cell.json holds.
//
//   auto cells = ...;   // cell.json objects: model, set, protocol, shots, seed, status,
//                       // metrics {auroc, aupr, f1, kappa}, ci95, splits, roc {fpr, tpr}
//   eval::write_report(cells, {"retclip", "random"}, {"idrid", "aptos"}, "runs/bench");
//
//   eval::Plot p;  p.title = "ROC";  p.curves.push_back({"retclip", fpr, tpr});
//   eval::draw_plot(p, "roc.png");
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace retclip::eval {

/// The metrics of a benchmark row, in column order: name in cell.json and the header.
const std::vector<std::pair<std::string, std::string>>& report_metrics();

/// "linear probe", "2-shot", "zero-shot", "fine-tune".
std::string protocol_label(const std::string& protocol, int64_t shots);

/// One row per cell: model, set, protocol, k, seed, status, task, level, n_test, each
/// metric with its 95% CI (lo, hi), the split hashes and seed, seconds, error.
std::string results_csv(const std::vector<nlohmann::json>& cells);

/// A table of one metric: sets as rows; columns grouped by protocol (and K), one per
/// model; "mean ± std" over the seeds of a cell group ("–" none, "failed" when every
/// seed failed); bold marks the best mean of a row within a protocol group.
struct ResultTable {
  std::string metric, title;
  std::vector<std::string> rows;
  std::vector<std::pair<std::string, std::string>> columns;  ///< (protocol label, model)
  std::vector<std::vector<std::string>> text;
  std::vector<std::vector<bool>> bold;
};

ResultTable result_table(const std::vector<nlohmann::json>& cells,
                         const std::vector<std::string>& models,
                         const std::vector<std::string>& sets, const std::string& metric);

std::string table_markdown(const ResultTable& t);
std::string table_html(const ResultTable& t);

/// A line plot. Points with NaN y are left out. `err` (same length as y, may be empty)
/// draws error bars. Axes are [x_min, x_max] x [y_min, y_max]; x_ticks are (value, label).
struct PlotCurve {
  std::string label;
  std::string note;  ///< a second, grey legend line (e.g. the table's value)
  std::vector<double> x, y, err;
  bool dashed = false;
  bool markers = false;
  int color = -1;  ///< palette index (-1: the curve's index)
};

struct Plot {
  std::string title, subtitle, x_label, y_label;
  double x_min = 0, x_max = 1, y_min = 0, y_max = 1;
  std::vector<std::pair<double, std::string>> x_ticks, y_ticks;  ///< empty: 0, 0.2, .., 1
  bool diagonal = false;                                         ///< the chance line y = x (ROC)
  std::vector<PlotCurve> curves;
};

/// Draws `plot` into a PNG (1000 x 640: plot area on the left, legend on the right).
void draw_plot(const Plot& plot, const std::filesystem::path& png);

/// Writes results.csv, results.json, results.md, plots/*.png and report.html into `dir`
/// from `cells` (every cell of the config, in order; `meta` goes into results.json).
/// Returns the PNG files written, relative to `dir`.
std::vector<std::string> write_report(const std::vector<nlohmann::json>& cells,
                                      const std::vector<std::string>& models,
                                      const std::vector<std::string>& sets,
                                      const nlohmann::json& meta, const std::filesystem::path& dir);

}  // namespace retclip::eval
