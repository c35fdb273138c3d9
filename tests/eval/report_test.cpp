// The benchmark's report from hand-made cells: the CSV rows, the table's mean ± std and
// bold best per protocol, the plots (non-trivial PNGs) and the HTML page.
#include <gtest/gtest.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "../support/scratch.hpp"
#include "retclip/data/manifest.hpp"
#include "retclip/eval/report.hpp"
#include "retclip/util/fs.hpp"

using namespace retclip;
using nlohmann::json;

namespace {

json report_cell(const std::string& model, const std::string& set, const std::string& protocol,
                 int64_t shots, uint64_t seed, double auroc) {
  return {{"model", model},
          {"set", set},
          {"protocol", protocol},
          {"shots", shots},
          {"seed", seed},
          {"status", "done"},
          {"task", "single-label"},
          {"level", "eye"},
          {"n_test", 10},
          {"metrics", {{"auroc", auroc}, {"aupr", 0.5}, {"f1", 0.4}, {"kappa", nullptr}}},
          {"ci95", {{"auroc", {auroc - 0.1, auroc + 0.05}}}},
          {"splits", {{"test", {{"n", 10}, {"ids_hash", "abc"}}}, {"seed", 3}}},
          {"roc", {{"curve", "ROC of class 'b'"}, {"fpr", {0, 0, 1}}, {"tpr", {0, auroc, 1}}}},
          {"seconds", 1.5}};
}

std::vector<json> report_cells() {
  std::vector<json> c;
  for (const char* set : {"eye", "patient"}) {
    c.push_back(report_cell("pre", set, "probe", 0, 0, 0.9));
    c.push_back(report_cell("rnd", set, "probe", 0, 0, 0.6));
    c.push_back(report_cell("pre", set, "few-shot", 2, 0, 0.7));
    c.push_back(report_cell("pre", set, "few-shot", 2, 1, 0.8));
    c.push_back(report_cell("rnd", set, "few-shot", 2, 0, 0.75));
    c.push_back(report_cell("rnd", set, "few-shot", 2, 1, 0.85));
    c.push_back(report_cell("pre", set, "few-shot", 4, 0, 0.8));
    c.push_back(report_cell("rnd", set, "few-shot", 4, 0, 0.7));
  }
  json failed = report_cell("pre", "patient", "finetune", 0, 0, 0);
  failed["status"] = "failed";
  failed["error"] = "no test split, \"really\"";
  failed.erase("metrics");
  c.push_back(failed);
  return c;
}

}  // namespace

TEST(Report, CsvHasOneRowPerCellWithCisAndErrors) {
  const auto rows = data::parse_csv(eval::results_csv(report_cells()));
  ASSERT_EQ(rows.size(), 1u + 17u);
  const auto& h = rows[0].fields;
  auto col = [&](const std::string& name) {
    return static_cast<size_t>(std::find(h.begin(), h.end(), name) - h.begin());
  };
  ASSERT_LT(col("auroc_lo"), h.size());
  EXPECT_EQ(rows[1].fields[col("auroc")], "0.9000");
  EXPECT_EQ(rows[1].fields[col("auroc_lo")], "0.8000");
  EXPECT_EQ(rows[1].fields[col("kappa")], "");  // null: not applicable
  EXPECT_EQ(rows[1].fields[col("test_hash")], "abc");
  EXPECT_EQ(rows[17].fields[col("status")], "failed");
  EXPECT_EQ(rows[17].fields[col("error")], "no test split, \"really\"");
}

TEST(Report, TableMeansOverSeedsAndBoldsTheBestPerProtocol) {
  const auto t = eval::result_table(report_cells(), {"pre", "rnd"}, {"eye", "patient"}, "auroc");
  ASSERT_EQ(t.columns.size(), 7u);  // probe x2, 2-shot x2, 4-shot x2, fine-tune (pre)
  EXPECT_EQ(t.columns[2].first, "2-shot");
  EXPECT_EQ(t.text[0][0], "0.900");
  EXPECT_TRUE(t.bold[0][0]);
  EXPECT_FALSE(t.bold[0][1]);
  EXPECT_EQ(t.text[0][2], "0.750 ± 0.050");  // population std over two seeds
  EXPECT_EQ(t.text[0][3], "0.800 ± 0.050");
  EXPECT_TRUE(t.bold[0][3]);
  EXPECT_FALSE(t.bold[0][2]);
  EXPECT_EQ(t.text[0][6], "–");       // no fine-tune cell on this set
  EXPECT_EQ(t.text[1][6], "failed");  // its only seed failed
  const std::string md = eval::table_markdown(t);
  EXPECT_NE(md.find("| eye | **0.900** | 0.600 | 0.750 ± 0.050 | **0.800 ± 0.050** |"),
            std::string::npos)
      << md;
  EXPECT_NE(eval::table_html(t).find("<th colspan=\"2\">linear probe</th>"), std::string::npos);
}

TEST(Report, WritesPlotsTablesAndOnePage) {
  const auto dir = test::scratch_dir("report", "all");
  const auto plots = eval::write_report(report_cells(), {"pre", "rnd"}, {"eye", "patient"},
                                        {{"config", "x"}}, dir);
  // Per set: ROC of the probe and of the largest K, and the few-shot curve.
  EXPECT_EQ(plots.size(), 6u);
  for (const auto& p : plots) {
    const cv::Mat img = cv::imread((dir / p).string());
    ASSERT_FALSE(img.empty()) << p;
    EXPECT_EQ(img.cols, 1000);
    EXPECT_EQ(img.rows, 640);
    // Non-trivial: many pixels neither white nor grey (the coloured curves and legend).
    cv::Mat hsv;
    cv::cvtColor(img, hsv, cv::COLOR_BGR2HSV);
    std::vector<cv::Mat> ch;
    cv::split(hsv, ch);
    EXPECT_GT(cv::countNonZero(ch[1] > 80), 500) << p;
  }
  const std::string html = util::read_file(dir / "report.html");
  for (const auto& p : plots) EXPECT_NE(html.find(p), std::string::npos) << p;
  EXPECT_NE(html.find("no test split, &quot;really&quot;"), std::string::npos);
  const std::string md = util::read_file(dir / "results.md");
  EXPECT_NE(md.find("## AUROC (macro)"), std::string::npos);
  EXPECT_NE(md.find("## Failed cells"), std::string::npos);
  const json j = json::parse(util::read_file(dir / "results.json"));
  EXPECT_EQ(j.at("cells").size(), 17u);
  EXPECT_FALSE(j.at("cells")[0].contains("roc"));
}

TEST(Report, CellsNotRunYetAreSaidSo) {
  std::vector<json> cells = {report_cell("pre", "eye", "probe", 0, 0, 0.9),
                             {{"model", "rnd"},
                              {"set", "eye"},
                              {"protocol", "probe"},
                              {"shots", 0},
                              {"seed", 0},
                              {"status", "not run"}}};
  const auto t = eval::result_table(cells, {"pre", "rnd"}, {"eye"}, "auroc");
  ASSERT_EQ(t.text[0].size(), 2u);
  EXPECT_EQ(t.text[0][1], "not run");
  EXPECT_FALSE(t.bold[0][0]);  // nothing to compare with
}
