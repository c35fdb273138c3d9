// Labelled-set readers: each label column form, the folder layout, split draws and the
// bad-row policy, on small files written here.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <map>
#include <set>

#include "retclip/data/labels.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using namespace retclip;
using namespace retclip::data;

namespace {

class Labels : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("retclip_labels_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { util::remove_tree(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    util::write_file_atomic(dir_ / name, text);
    return (dir_ / name).string();
  }
  fs::path dir_;
};

}  // namespace

TEST_F(Labels, FlagStringsInDeclaredOrder) {
  LabelOptions o;
  o.path = write("m.csv",
                 "patient_id,left_image,right_image,labels,split\n"
                 "1,a.jpg,b.jpg,101,train\n2,c.jpg,,010,test\n3,,d.jpg,001,val\n");
  o.classes = {"N", "D", "G"};
  auto s = read_labelled(o);
  EXPECT_EQ(s.level, config::Level::kPatient);
  EXPECT_TRUE(s.multi_label);
  ASSERT_EQ(s.items.size(), 3u);
  EXPECT_EQ(s.items[0].target, (std::vector<float>{1, 0, 1}));
  EXPECT_EQ(s.items[0].left.path, (dir_ / "a.jpg").string());
  EXPECT_FALSE(s.items[1].right.present());
  EXPECT_EQ(s.indices("test"), (std::vector<int64_t>{1}));
  EXPECT_FALSE(s.val_drawn);
  o.classes = {"N", "D"};  // flags of length 3 do not fit two classes
  EXPECT_THROW(read_labelled(o), UsageError);
  o.classes.clear();
  try {
    read_labelled(o);
    FAIL() << "flags without --classes must be refused";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("--classes"), std::string::npos) << e.what();
  }
}

TEST_F(Labels, ClassNameColumnAndPerClassColumns) {
  LabelOptions o;
  o.path = write("m.csv",
                 "patient_id,left_image,right_image,label,split\n"
                 "1,a.jpg,b.jpg,glaucoma,train\n2,c.jpg,,normal,test\n3,e.jpg,,normal,train\n");
  auto s = read_labelled(o);
  EXPECT_FALSE(s.multi_label);
  EXPECT_EQ(s.classes, (std::vector<std::string>{"glaucoma", "normal"}));  // sorted
  EXPECT_EQ(s.items[1].label, 1);
  o.classes = {"normal", "glaucoma"};  // declared order wins
  EXPECT_EQ(read_labelled(o).items[1].label, 0);

  o.path = write("p.csv",
                 "patient_id,left_image,right_image,dr,amd,split\n"
                 "1,a.jpg,b.jpg,1,0,train\n2,c.jpg,,1,1,test\n");
  o.classes = {"dr", "amd"};
  auto p = read_labelled(o);
  EXPECT_TRUE(p.multi_label);
  EXPECT_EQ(p.items[1].target, (std::vector<float>{1, 1}));
}

TEST_F(Labels, PerEyeLabelsMakeOneItemPerEye) {
  LabelOptions o;
  o.path = write("m.jsonl",
                 "{\"patient_id\":\"p1\",\"left_image\":\"l.jpg\",\"right_image\":\"r.jpg\","
                 "\"left_label\":\"drusen\",\"right_label\":\"normal\",\"split\":\"train\"}\n"
                 "{\"patient_id\":\"p2\",\"left_image\":\"l2.jpg\",\"right_image\":\"\","
                 "\"left_label\":\"normal\",\"right_label\":\"\",\"split\":\"test\"}\n");
  auto s = read_labelled(o);
  EXPECT_EQ(s.level, config::Level::kEye);
  ASSERT_EQ(s.items.size(), 3u);
  EXPECT_EQ(s.items[1].id, "p1:right");
  EXPECT_EQ(s.items[1].eye, Eye::kRight);
  EXPECT_EQ(s.items[1].image().path, (dir_ / "r.jpg").string());
  EXPECT_FALSE(s.items[1].left.present());
  EXPECT_EQ(s.items[0].label, 0);  // drusen
}

TEST_F(Labels, BadRowsFollowThePolicy) {
  LabelOptions o;
  o.path = write("m.csv",
                 "patient_id,left_image,right_image,label,split\n"
                 "1,a.jpg,,glaucoma,train\n2,c.jpg,,,test\n3,,,normal,train\n4,x.jpg,,normal,"
                 "holdout\n5,y.jpg,,normal,test\n");
  try {
    read_labelled(o);
    FAIL() << "kFail must throw";
  } catch (const UsageError& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("m.csv row 3"), std::string::npos) << w;
    EXPECT_NE(w.find("HINT"), std::string::npos) << w;
  }
  o.policy = data::BadSamplePolicy::kSkip;
  auto s = read_labelled(o);
  EXPECT_EQ(s.items.size(), 2u);
  ASSERT_EQ(s.bad.size(), 3u);
  EXPECT_NE(s.bad[2].reason.find("holdout"), std::string::npos);
}

TEST_F(Labels, FolderLayout) {
  for (const char* f : {"train/normal/1.jpg", "train/normal/2.png", "train/glaucoma/3.jpg",
                        "test/normal/4.jpg", "test/glaucoma/5.jpg", "val/glaucoma/6.jpg"}) {
    fs::create_directories((dir_ / "set" / f).parent_path());
    util::write_file_atomic(dir_ / "set" / f, "x");
  }
  LabelOptions o;
  o.path = (dir_ / "set").string();
  auto s = read_labelled(o);
  EXPECT_EQ(s.level, config::Level::kEye);
  EXPECT_EQ(s.classes, (std::vector<std::string>{"glaucoma", "normal"}));
  EXPECT_EQ(s.items.size(), 6u);
  EXPECT_EQ(s.indices("val").size(), 1u);
  EXPECT_EQ(s.items[0].eye, Eye::kUnknown);
  util::write_file_atomic(dir_ / "set/train/normal/notes.txt", "x");
  EXPECT_THROW(read_labelled(o), UsageError);
  o.policy = data::BadSamplePolicy::kSkip;
  EXPECT_EQ(read_labelled(o).bad.size(), 1u);
}

TEST_F(Labels, DrawnSplitsAreStratifiedSeededAndKeepPatientsTogether) {
  std::string csv = "patient_id,left_image,right_image,left_label,right_label\n";
  for (int i = 0; i < 60; ++i) {
    const char* c = i % 3 == 0 ? "a" : "b";
    csv += std::to_string(i) + ",l.jpg,r.jpg," + c + "," + c + "\n";
  }
  LabelOptions o;
  o.path = write("m.csv", csv);
  o.test_fraction = 0.25;
  o.val_fraction = 0.2;
  o.seed = 5;
  auto s = read_labelled(o);
  EXPECT_TRUE(s.test_drawn);
  EXPECT_TRUE(s.val_drawn);
  // 20 "a" and 40 "b" patients: 5 + 10 to test, then 20% of the remaining 15 + 30, that is
  // 3 + 6, to val (two eyes each).
  EXPECT_EQ(s.indices("test").size(), 30u);
  EXPECT_EQ(s.indices("val").size(), 18u);
  int a_test = 0;
  for (int64_t i : s.indices("test")) a_test += s.items[i].label == 0;
  EXPECT_EQ(a_test, 10);
  std::map<std::string, std::set<std::string>> splits_of;
  for (const auto& it : s.items) splits_of[it.patient_id].insert(it.split);
  for (const auto& [pid, sp] : splits_of) EXPECT_EQ(sp.size(), 1u) << pid;
  EXPECT_EQ(read_labelled(o).split_hash("test"), s.split_hash("test"));
  o.seed = 6;
  EXPECT_NE(read_labelled(o).split_hash("test"), s.split_hash("test"));
  o.test_fraction = 0;
  EXPECT_THROW(read_labelled(o), UsageError);
}

TEST_F(Labels, NameListsAsSynthWritesThem) {
  LabelOptions o;
  o.path = write("train.csv",
                 "patient_id,left_image,right_image,report,split,left_labels,right_labels,"
                 "patient_labels\n"
                 "s1,l.png,r.png,x,train,dr2;drusen,normal,dr2;drusen\n"
                 "s2,l2.png,,x,test,glaucoma,,glaucoma\n");
  o.level = config::Level::kEye;
  auto e = read_labelled(o);
  EXPECT_TRUE(e.multi_label);
  EXPECT_EQ(e.classes, (std::vector<std::string>{"dr2", "drusen", "glaucoma", "normal"}));
  ASSERT_EQ(e.items.size(), 3u);  // s2 has no right eye
  EXPECT_EQ(e.items[0].target, (std::vector<float>{1, 1, 0, 0}));
  o.level = config::Level::kPatient;
  auto p = read_labelled(o);
  EXPECT_EQ(p.items.size(), 2u);
  EXPECT_EQ(p.classes, (std::vector<std::string>{"dr2", "drusen", "glaucoma"}));
}

namespace {

std::string usage_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

// A split column that holds only `val` (synth's val.csv): the probe is refused with each
// split's count and the flag that draws them, and --ignore-split draws all three.
TEST_F(Labels, MissingSplitsNameTheCountsAndTheFlagThatDrawsThem) {
  std::string csv = "patient_id,left_image,right_image,label,split\n";
  for (int i = 0; i < 20; ++i)
    csv += "P" + std::to_string(i) + ",l.png,r.png," + (i % 2 ? "a" : "b") + ",val\n";
  LabelOptions o;
  o.path = write("held_out.csv", csv);
  o.test_fraction = 0.3;
  LabelledSet s = read_labelled(o);
  std::string m = usage_message([&] {
    require_splits(s, o, {"train", "val", "test"}, "the probe");
  });
  EXPECT_NE(m.find("the probe needs train, val, test items"), std::string::npos) << m;
  EXPECT_NE(m.find("train 0, val 20, test 0"), std::string::npos) << m;
  EXPECT_NE(m.find("no train, test items"), std::string::npos) << m;
  EXPECT_NE(m.find("HINT: --ignore-split"), std::string::npos) << m;
  EXPECT_NE(m.find("--test-fraction 0.3"), std::string::npos) << m;

  o.ignore_split = true;
  s = read_labelled(o);
  EXPECT_NO_THROW(require_splits(s, o, {"train", "val", "test"}, "the probe"));
  EXPECT_EQ(s.indices("test").size(), 6u);
  EXPECT_EQ(split_counts(s), "train 12, val 2 (drawn), test 6 (drawn)");

  // --ignore-split without a test fraction says which flag is missing.
  o.test_fraction = 0;
  m = usage_message([&] { read_labelled(o); });
  EXPECT_NE(m.find("--ignore-split draws every split"), std::string::npos) << m;
  EXPECT_NE(m.find("HINT: add --test-fraction 0.3"), std::string::npos) << m;
}

// Fine-tuning reads the same sets through config keys: its hints name those keys, never
// the probe's command-line flags.
TEST_F(Labels, HintsNameTheCallersOptions) {
  LabelOptions o;
  o.option_section = "finetune";
  o.can_ignore_split = false;
  o.path = (dir_ / "absent.csv").string();
  std::string m = usage_message([&] { read_labelled(o); });
  EXPECT_NE(m.find("(finetune.data) does not exist"), std::string::npos) << m;
  EXPECT_EQ(m.find("--data"), std::string::npos) << m;

  o.path = write("nosplit.csv",
                 "patient_id,left_image,right_image,label\n1,a.png,b.png,x\n2,c.png,d.png,y\n");
  m = usage_message([&] { read_labelled(o); });
  EXPECT_NE(m.find("--set finetune.test_fraction=0.3"), std::string::npos) << m;
  EXPECT_EQ(m.find("--test-fraction"), std::string::npos) << m;

  o.path = write("valonly.csv",
                 "patient_id,left_image,right_image,label,split\n1,a.png,b.png,x,val\n"
                 "2,c.png,d.png,y,val\n");
  LabelledSet s = read_labelled(o);
  m = usage_message([&] { require_splits(s, o, {"train", "val"}, "fine-tuning"); });
  EXPECT_NE(m.find("train 0, val 2, test 0"), std::string::npos) << m;
  EXPECT_NE(m.find("--set finetune.test_fraction=0.3"), std::string::npos) << m;
  EXPECT_EQ(m.find("ignore"), std::string::npos) << m;
  EXPECT_EQ(label_option(o, "val_fraction", "0.2"), "--set finetune.val_fraction=0.2");
  o.option_section.clear();
  EXPECT_EQ(label_option(o, "val_fraction", "0.2"), "--val-fraction 0.2");
  EXPECT_EQ(label_option(o, "ignore_split"), "--ignore-split");
}
