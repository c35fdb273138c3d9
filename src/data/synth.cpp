// Synthetic colour fundus photographs: findings sampling, procedural drawing with
// OpenCV (background, macula, disc and cup, vessel tree, lesions, haze), per-eye
// reports in English or Chinese, and the data set writer (manifest or RET-CLIP layout).
#include "retclip/data/synth.hpp"

#include "retclip/data/base64.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>
#ifdef RETCLIP_WITH_IMGCODECS
#include <opencv2/imgcodecs.hpp>
#endif

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"
#include "retclip/util/progress.hpp"
#include "retclip/util/system.hpp"

namespace retclip::data {
namespace {

constexpr double kPi = 3.14159265358979323846;

// ---------------------------------------------------------------------------------
// Randomness: std::mt19937_64 with our own uniform/normal so that the numbers do not
// depend on the standard library's distributions. Streams are derived from
// (seed, index, stream) so every patient and every eye is independent of threads.

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t mix_seed(uint64_t seed, uint64_t index, uint64_t stream) {
  return splitmix64(splitmix64(splitmix64(seed) ^ index) ^ (stream * 0xD1B54A32D192ED03ull));
}

class Rng {
 public:
  explicit Rng(uint64_t seed) : eng_(seed) {}
  /// Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(eng_() >> 11) * (1.0 / 9007199254740992.0); }
  double uniform(double a, double b) { return a + (b - a) * uniform(); }
  float uniformf(double a, double b) { return static_cast<float>(uniform(a, b)); }
  /// Integer in [lo, hi].
  int64_t integer(int64_t lo, int64_t hi) {
    int64_t v = lo + static_cast<int64_t>(uniform() * static_cast<double>(hi - lo + 1));
    return std::min(v, hi);
  }
  /// Standard normal (Box-Muller, one value per call).
  double normal() {
    double u1 = 1.0 - uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * kPi * u2);
  }
  bool chance(double p) { return uniform() < p; }
  /// Index drawn with the given (unnormalised) weights.
  int pick(std::initializer_list<double> w) {
    double total = 0;
    for (double x : w) total += x;
    double u = uniform() * total;
    int i = 0;
    for (double x : w) {
      if (u < x) return i;
      u -= x;
      ++i;
    }
    return i - 1;
  }
  uint64_t next() { return eng_(); }

 private:
  std::mt19937_64 eng_;
};

// ---------------------------------------------------------------------------------
// Drawing helpers. The canvas is float RGB in [0, 1], drawn at twice the output size
// (area-downsampled at the end for anti-aliasing) in the right-eye orientation; left
// eyes are mirrored at the end, which keeps anatomy (nasal/temporal) correct.

using Vec3 = cv::Vec3f;

struct Geometry {
  float W = 0, cx = 0, cy = 0, R = 0;  // canvas size, field-of-view centre and radius
  cv::Point2f disc, macula;
  float rd = 0;                        // optic disc radius
  float cup = 0;                       // cup radius
};

cv::Point sub(cv::Point2f p) {  // 3 fractional bits for cv drawing with shift = 3
  return cv::Point(static_cast<int>(std::lround(p.x * 8)), static_cast<int>(std::lround(p.y * 8)));
}
int subr(float r) { return std::max(1, static_cast<int>(std::lround(r * 8))); }
constexpr int kShift = 3;

/// canvas = canvas * (1 - a m) + color * a m, with m a single-channel mask in [0, 1].
void blend(cv::Mat& canvas, const cv::Mat& mask, Vec3 color, float alpha) {
  for (int y = 0; y < canvas.rows; ++y) {
    auto* c = canvas.ptr<Vec3>(y);
    const float* m = mask.ptr<float>(y);
    for (int x = 0; x < canvas.cols; ++x) {
      float a = alpha * m[x];
      if (a <= 0.f) continue;
      c[x] = c[x] * (1.f - a) + color * a;
    }
  }
}

/// canvas *= 1 - a m (darkening that keeps the hue of what is below).
void darken(cv::Mat& canvas, const cv::Mat& mask, Vec3 amount) {
  for (int y = 0; y < canvas.rows; ++y) {
    auto* c = canvas.ptr<Vec3>(y);
    const float* m = mask.ptr<float>(y);
    for (int x = 0; x < canvas.cols; ++x) {
      if (m[x] <= 0.f) continue;
      for (int k = 0; k < 3; ++k) c[x][k] *= 1.f - amount[k] * m[x];
    }
  }
}

cv::Mat new_mask(const Geometry& g) {
  int w = static_cast<int>(g.W);
  return cv::Mat::zeros(w, w, CV_32F);
}

void soften(cv::Mat& mask, float sigma) {
  if (sigma > 0.05f) cv::GaussianBlur(mask, mask, cv::Size(0, 0), sigma);
}

/// A random point of `q` (canonical right-eye frame: temporal = image left, superior =
/// up) at a distance in [r0, r1] * R from the centre, away from the optic disc.
cv::Point2f point_in_quadrant(Rng& rng, const Geometry& g, Quadrant q, float r0, float r1) {
  bool temporal = q == Quadrant::kSuperiorTemporal || q == Quadrant::kInferiorTemporal;
  bool superior = q == Quadrant::kSuperiorTemporal || q == Quadrant::kSuperiorNasal;
  cv::Point2f p;
  for (int tries = 0; tries < 32; ++tries) {
    // Angle inside the quadrant with a margin of 12 degrees from the axes.
    double a = rng.uniform(12, 78) * kPi / 180.0;
    double r = g.R * std::sqrt(rng.uniform(r0 * r0, r1 * r1));
    float dx = static_cast<float>(r * std::cos(a)), dy = static_cast<float>(r * std::sin(a));
    p = cv::Point2f(g.cx + (temporal ? -dx : dx), g.cy + (superior ? -dy : dy));
    if (cv::norm(p - g.disc) > 1.6 * g.rd) break;
  }
  return p;
}

Quadrant random_quadrant(Rng& rng) { return static_cast<Quadrant>(rng.integer(0, 3)); }

int amount_count(Rng& rng, Amount a) {
  switch (a) {
    case Amount::kFew: return static_cast<int>(rng.integer(3, 5));
    case Amount::kSeveral: return static_cast<int>(rng.integer(7, 12));
    case Amount::kMany: return static_cast<int>(rng.integer(18, 26));
  }
  return 0;
}

// --- background ------------------------------------------------------------------

Vec3 pigment_color(int pigment) {
  switch (pigment) {
    case 0: return {0.88f, 0.39f, 0.16f};
    case 2: return {0.58f, 0.19f, 0.07f};
    default: return {0.76f, 0.29f, 0.11f};
  }
}

/// Low-frequency noise field in [-1, 1]-ish, `cells` x `cells` upsampled to the canvas.
cv::Mat noise_field(cv::RNG& rng, int cells, int w) {
  cv::Mat small(cells, cells, CV_32F);
  rng.fill(small, cv::RNG::NORMAL, 0.0, 1.0);
  cv::Mat big;
  cv::resize(small, big, cv::Size(w, w), 0, 0, cv::INTER_CUBIC);
  return big;
}

void draw_background(cv::Mat& canvas, const Geometry& g, const EyeFindings& f, Rng& rng,
                     cv::RNG& crng) {
  Vec3 base = pigment_color(f.myopia ? 0 : f.pigment);
  for (int k = 0; k < 3; ++k) base[k] *= rng.uniformf(0.95, 1.05);
  int w = static_cast<int>(g.W);
  cv::Mat low = noise_field(crng, 7, w), mid = noise_field(crng, 22, w);
  cv::Mat hue = noise_field(crng, 9, w);
  float gx = rng.uniformf(-0.10, 0.10), gy = rng.uniformf(-0.10, 0.10);
  for (int y = 0; y < w; ++y) {
    auto* c = canvas.ptr<Vec3>(y);
    const float *lo = low.ptr<float>(y), *mi = mid.ptr<float>(y), *hu = hue.ptr<float>(y);
    for (int x = 0; x < w; ++x) {
      float dx = (x - g.cx) / g.R, dy = (y - g.cy) / g.R;
      float r = std::sqrt(dx * dx + dy * dy);
      float vignette = std::max(0.25f, 1.f - 0.55f * std::pow(std::min(r, 1.2f), 2.4f));
      float light = vignette * (1.f + gx * dx + gy * dy) * (1.f + 0.07f * lo[x] + 0.035f * mi[x]);
      Vec3 col = base;
      col[1] *= 1.f + 0.08f * hu[x];  // yellow/red shifts of the pigment epithelium
      c[x] = col * light;
    }
  }
}

/// Myopic tessellation: large choroidal vessels (orange) with dark pigmented gaps.
void draw_tessellation(cv::Mat& canvas, const Geometry& g, Rng& rng) {
  cv::Mat vessels = new_mask(g);
  int n = static_cast<int>(rng.integer(45, 60));
  for (int i = 0; i < n; ++i) {
    // Choroidal vessels run roughly radially from the posterior pole.
    float a0 = rng.uniformf(0, 2 * kPi);
    float r0 = rng.uniformf(0.05, 0.5) * g.R;
    cv::Point2f p(g.macula.x + r0 * std::cos(a0), g.macula.y + r0 * std::sin(a0));
    float ang = a0 + rng.uniformf(-0.4, 0.4);
    float width = rng.uniformf(0.022, 0.038) * g.R;
    for (int s = 0; s < 26; ++s) {
      ang += static_cast<float>(rng.normal() * 0.25);
      cv::Point2f q = p + 0.05f * g.R * cv::Point2f(std::cos(ang), std::sin(ang));
      cv::line(vessels, sub(p), sub(q), cv::Scalar(1.0), std::max(1, static_cast<int>(width)),
               cv::LINE_8, kShift);
      p = q;
    }
  }
  soften(vessels, 0.012f * g.R);
  cv::Mat scaled = vessels * 1.6, gaps;
  cv::min(scaled, 1.0, scaled);
  cv::subtract(cv::Scalar(1.0), scaled, gaps);
  darken(canvas, gaps, Vec3(0.24f, 0.36f, 0.36f));
  blend(canvas, vessels, Vec3(0.95f, 0.50f, 0.28f), 0.2f);
}

void draw_macula(cv::Mat& canvas, const Geometry& g, Rng& rng) {
  cv::Mat m = new_mask(g);
  float s1 = 0.17f * g.R * rng.uniformf(0.9, 1.1), s2 = 0.045f * g.R;
  for (int y = 0; y < m.rows; ++y) {
    float* p = m.ptr<float>(y);
    for (int x = 0; x < m.cols; ++x) {
      float d2 = (x - g.macula.x) * (x - g.macula.x) + (y - g.macula.y) * (y - g.macula.y);
      p[x] = 0.55f * std::exp(-d2 / (2 * s1 * s1)) + 0.45f * std::exp(-d2 / (2 * s2 * s2));
    }
  }
  darken(canvas, m, Vec3(0.45f, 0.65f, 0.6f));
  // Foveal light reflex: a tiny bright point at the centre.
  cv::Mat reflex = new_mask(g);
  cv::circle(reflex, sub(g.macula), subr(0.012f * g.R), cv::Scalar(1.0), cv::FILLED, cv::LINE_8,
             kShift);
  soften(reflex, 0.006f * g.R);
  blend(canvas, reflex, Vec3(0.95f, 0.75f, 0.55f), 0.6f);
}

void draw_geographic_atrophy(cv::Mat& canvas, const Geometry& g, Rng& rng) {
  cv::Mat m = new_mask(g);
  // A few confluent, sharply demarcated lobes over the macula.
  int lobes = static_cast<int>(rng.integer(2, 4));
  for (int i = 0; i < lobes; ++i) {
    cv::Point2f c = g.macula + cv::Point2f(rng.uniformf(-0.06, 0.06) * g.R,
                                           rng.uniformf(-0.05, 0.05) * g.R);
    cv::Size2f axes(rng.uniformf(0.09, 0.15) * g.R, rng.uniformf(0.07, 0.12) * g.R);
    cv::ellipse(m, cv::RotatedRect(c, axes * 2.f, rng.uniformf(0, 180)), cv::Scalar(1.0),
                cv::FILLED, cv::LINE_8);
  }
  soften(m, 0.006f * g.R);
  blend(canvas, m, Vec3(0.97f, 0.74f, 0.52f), 0.85f);
  // Large choroidal vessels show through the atrophic area.
  cv::Mat v = new_mask(g);
  for (int i = 0; i < 5; ++i) {
    cv::Point2f p = g.macula + cv::Point2f(rng.uniformf(-0.15, 0.15) * g.R,
                                           rng.uniformf(-0.12, 0.12) * g.R);
    float ang = rng.uniformf(0, 2 * kPi);
    cv::Point2f q = p + 0.12f * g.R * cv::Point2f(std::cos(ang), std::sin(ang));
    cv::line(v, sub(p), sub(q), cv::Scalar(1.0), std::max(1, static_cast<int>(0.02f * g.R)),
             cv::LINE_8, kShift);
  }
  v = v.mul(m);
  soften(v, 0.004f * g.R);
  blend(canvas, v, Vec3(0.85f, 0.38f, 0.2f), 0.7f);
}

void draw_naevus(cv::Mat& canvas, const Geometry& g, const EyeFindings& f, Rng& rng) {
  cv::Mat m = new_mask(g);
  cv::Point2f c = point_in_quadrant(rng, g, f.naevus_quadrant, 0.35f, 0.75f);
  cv::Size2f axes(rng.uniformf(0.06, 0.08) * g.R, rng.uniformf(0.045, 0.065) * g.R);
  cv::ellipse(m, cv::RotatedRect(c, axes * 2.f, rng.uniformf(0, 180)), cv::Scalar(1.0),
              cv::FILLED, cv::LINE_8);
  soften(m, 0.012f * g.R);
  blend(canvas, m, Vec3(0.26f, 0.24f, 0.24f), 0.75f);
}

/// Peripapillary atrophy crescent on the temporal side of the disc (myopia).
void draw_ppa(cv::Mat& canvas, const Geometry& g, Rng& rng) {
  cv::Mat m = new_mask(g);
  float shift = rng.uniformf(0.35, 0.5) * g.rd;
  cv::Point2f c(g.disc.x - shift, g.disc.y);
  cv::ellipse(m, cv::RotatedRect(c, cv::Size2f(2.f * 1.05f * g.rd + shift, 2.f * 1.12f * g.rd), 0),
              cv::Scalar(1.0), cv::FILLED, cv::LINE_8);
  soften(m, 0.004f * g.R);
  blend(canvas, m, Vec3(0.94f, 0.86f, 0.74f), 0.95f);
  // Pigmented rim of the crescent.
  cv::Mat rim = new_mask(g);
  cv::ellipse(rim, cv::RotatedRect(c, cv::Size2f(2.f * 1.05f * g.rd + shift, 2.f * 1.12f * g.rd), 0),
              cv::Scalar(1.0), std::max(1, static_cast<int>(0.012f * g.R)), cv::LINE_8);
  soften(rim, 0.004f * g.R);
  blend(canvas, rim, Vec3(0.35f, 0.15f, 0.08f), 0.6f);
}

void draw_disc(cv::Mat& canvas, const Geometry& g, Rng& rng) {
  cv::Mat m = new_mask(g);
  float tilt = rng.uniformf(-12, 12);
  cv::ellipse(m, cv::RotatedRect(g.disc, cv::Size2f(2.f * g.rd, 2.f * g.rd * 1.08f), tilt),
              cv::Scalar(1.0), cv::FILLED, cv::LINE_8);
  soften(m, 0.012f * g.R);
  blend(canvas, m, Vec3(1.0f, 0.74f, 0.48f), 0.95f);
  // The cup: paler, slightly temporal in the disc; its vertical size is the C/D ratio.
  cv::Mat cup = new_mask(g);
  cv::Point2f cc(g.disc.x - 0.08f * (g.rd - g.cup), g.disc.y);
  cv::ellipse(cup, cv::RotatedRect(cc, cv::Size2f(2.f * g.cup * 0.95f, 2.f * g.cup * 1.08f), tilt),
              cv::Scalar(1.0), cv::FILLED, cv::LINE_8);
  soften(cup, 0.006f * g.R);
  blend(canvas, cup, Vec3(1.0f, 0.97f, 0.88f), 0.95f);
}

// --- vessels ---------------------------------------------------------------------

struct Seg {
  cv::Point2f a, b;
  float w;  // width in canvas pixels before calibre changes
  float s;  // arc length at `a` (for beading)
};

void grow_vessel(Rng& rng, const Geometry& g, std::vector<Seg>& out, cv::Point2f p, float ang,
                 float w, float len, float curv, float wiggle, int depth, float s0) {
  const float step = 0.02f * g.R;
  int n = static_cast<int>(len / step);
  float s = s0;
  for (int i = 0; i < n; ++i) {
    ang += curv * step + wiggle * static_cast<float>(rng.normal()) * 0.09f;
    cv::Point2f q = p + step * cv::Point2f(std::cos(ang), std::sin(ang));
    if (std::hypot(q.x - g.cx, q.y - g.cy) > g.R * 1.02f) break;
    // The fovea is avascular: branches stop at its rim.
    if (depth > 0 && cv::norm(q - g.macula) < 0.1 * g.R) break;
    out.push_back({p, q, w, s});
    s += step;
    w = std::max(w * 0.993f, 0.9f);
    if (depth < 3 && w > 1.4f && rng.chance(0.075)) {
      float side = rng.chance(0.5) ? 1.f : -1.f;
      float rem = static_cast<float>(n - i) * step;
      grow_vessel(rng, g, out, q, ang + side * rng.uniformf(0.45, 0.95), w * 0.68f,
                  rem * rng.uniformf(0.35, 0.75) + 0.08f * g.R, side * 0.4f / g.R, wiggle,
                  depth + 1, s);
      w *= 0.9f;
    }
    p = q;
  }
}

/// The arterial or venous tree: 2 temporal arcades, 2 nasal vessels, 1-2 small nasal ones.
std::vector<Seg> vessel_tree(Rng& rng, const Geometry& g, bool vein, float wiggle) {
  std::vector<Seg> out;
  float main_w = (vein ? 0.034f : 0.025f) * g.R;
  float off = vein ? 0.14f : -0.14f;  // arteries and veins leave the disc side by side
  struct Trunk {
    float ang, curv, len, wscale;
  };
  const float up = static_cast<float>(-kPi / 2), down = static_cast<float>(kPi / 2);
  std::vector<Trunk> trunks = {
      {up - 0.30f + off, -1.55f / g.R, 1.45f * g.R, 1.0f},   // superotemporal arcade
      {down + 0.30f - off, 1.55f / g.R, 1.45f * g.R, 1.0f},  // inferotemporal arcade
      {up + 0.55f + off, 0.35f / g.R, 0.9f * g.R, 0.75f},    // superonasal
      {down - 0.55f - off, -0.35f / g.R, 0.9f * g.R, 0.75f}, // inferonasal
      {0.05f + off, 0.f, 0.7f * g.R, 0.55f},                  // nasal
  };
  for (const auto& t : trunks) {
    float ang = t.ang + rng.uniformf(-0.12, 0.12);
    cv::Point2f start = g.disc + (g.cup + 0.01f * g.R) * cv::Point2f(std::cos(ang), std::sin(ang));
    grow_vessel(rng, g, out, start, ang, main_w * t.wscale * rng.uniformf(0.9, 1.1),
                t.len * rng.uniformf(0.9, 1.1), t.curv * rng.uniformf(0.85, 1.15), wiggle, 0, 0.f);
  }
  return out;
}

bool segments_cross(const Seg& p, const Seg& q, cv::Point2f* at) {
  cv::Point2f r = p.b - p.a, s = q.b - q.a;
  float den = r.x * s.y - r.y * s.x;
  if (std::abs(den) < 1e-6f) return false;
  cv::Point2f d = q.a - p.a;
  float t = (d.x * s.y - d.y * s.x) / den, u = (d.x * r.y - d.y * r.x) / den;
  if (t < 0 || t > 1 || u < 0 || u > 1) return false;
  *at = p.a + t * r;
  return true;
}

void draw_segments(cv::Mat& mask, const std::vector<Seg>& segs, float scale, float beading) {
  for (const auto& sg : segs) {
    float w = sg.w * scale;
    if (beading > 0) w *= 1.f + beading * std::sin(sg.s * 0.9f / std::max(sg.w, 1.f));
    cv::line(mask, sub(sg.a), sub(sg.b), cv::Scalar(1.0),
             std::max(1, static_cast<int>(std::lround(w))), cv::LINE_8, kShift);
  }
}

void draw_vessels(cv::Mat& canvas, const Geometry& g, const EyeFindings& f, uint64_t seed) {
  Rng vrng(mix_seed(seed, 11, 0)), arng(mix_seed(seed, 12, 0));
  std::vector<Seg> veins = vessel_tree(vrng, g, true, 1.0f);
  // Hypertensive arteries are straightened (less tortuous) and narrowed.
  std::vector<Seg> arteries = vessel_tree(arng, g, false, f.hypertensive ? 0.3f : 1.0f);
  bool dilated = f.dr_grade >= 3;
  cv::Mat vm = new_mask(g);
  draw_segments(vm, veins, dilated ? 1.3f : 1.0f, dilated ? 0.3f : 0.f);
  if (f.hypertensive) {
    // Arteriovenous nicking: the vein narrows to nothing on both sides of a crossing.
    int nicks = 0;
    for (const auto& a : arteries) {
      if (a.w < 1.5f) continue;
      for (const auto& v : veins) {
        cv::Point2f x;
        if (v.w < 1.5f || !segments_cross(a, v, &x)) continue;
        if (cv::norm(x - g.disc) < 1.5 * g.rd) continue;
        cv::circle(vm, sub(x), subr(a.w * 0.5f + 1.6f * v.w), cv::Scalar(0.0), cv::FILLED,
                   cv::LINE_8, kShift);
        ++nicks;
        break;
      }
      if (nicks >= 14) break;
    }
  }
  soften(vm, 0.6f);
  blend(canvas, vm, Vec3(0.40f, 0.05f, 0.05f), 0.9f);
  cv::Mat am = new_mask(g);
  draw_segments(am, arteries, f.hypertensive ? 0.5f : 1.0f, 0.f);
  soften(am, 0.6f);
  blend(canvas, am, f.hypertensive ? Vec3(0.80f, 0.30f, 0.17f) : Vec3(0.68f, 0.14f, 0.09f),
        0.88f);
}

/// Neovascularisation at the disc: tangles of fine new vessels on and around the disc.
void draw_nvd(cv::Mat& canvas, const Geometry& g, Rng& rng) {
  cv::Mat m = new_mask(g);
  int tufts = static_cast<int>(rng.integer(3, 5));
  for (int t = 0; t < tufts; ++t) {
    float a = rng.uniformf(0, 2 * kPi);
    cv::Point2f c = g.disc + g.rd * rng.uniformf(0.5, 1.2) * cv::Point2f(std::cos(a), std::sin(a));
    for (int l = 0; l < 7; ++l) {
      cv::Point2f p = c;
      float ang = rng.uniformf(0, 2 * kPi);
      for (int s = 0; s < 9; ++s) {
        ang += rng.uniformf(-1.0, 1.0);
        cv::Point2f q = p + 0.025f * g.R * cv::Point2f(std::cos(ang), std::sin(ang));
        cv::line(m, sub(p), sub(q), cv::Scalar(1.0), std::max(1, static_cast<int>(0.012f * g.R)),
                 cv::LINE_8, kShift);
        p = q;
      }
    }
  }
  soften(m, 0.5f);
  blend(canvas, m, Vec3(0.62f, 0.06f, 0.06f), 0.85f);
}

// --- lesions ---------------------------------------------------------------------

void draw_blot(cv::Mat& mask, Rng& rng, cv::Point2f c, float r) {
  // Blot haemorrhage: a few overlapping discs.
  for (int k = 0; k < 3; ++k) {
    cv::Point2f o = c + r * 0.4f * cv::Point2f(rng.uniformf(-1, 1), rng.uniformf(-1, 1));
    cv::circle(mask, sub(o), subr(r * rng.uniformf(0.6, 1.0)), cv::Scalar(1.0), cv::FILLED,
               cv::LINE_8, kShift);
  }
}

void draw_dr(cv::Mat& canvas, const Geometry& g, const EyeFindings& f, Rng& rng) {
  cv::Mat ma = new_mask(g), haem = new_mask(g), exu = new_mask(g), cws = new_mask(g);
  // Severe NPDR spreads lesions over all four quadrants; otherwise one quadrant holds them.
  auto main_site = [&](int i) {
    Quadrant q = f.dr_grade == 3 ? static_cast<Quadrant>(i % 4) : f.dr_quadrant;
    return point_in_quadrant(rng, g, q, 0.2f, 0.88f);
  };
  if (f.dr_grade == 1) {
    int n = amount_count(rng, f.dr_amount);
    for (int i = 0; i < n; ++i)
      cv::circle(ma, sub(main_site(i)), subr(rng.uniformf(0.014, 0.02) * g.R), cv::Scalar(1.0),
                 cv::FILLED, cv::LINE_8, kShift);
  } else {
    int n = f.dr_grade == 3 ? static_cast<int>(rng.integer(24, 32)) : amount_count(rng, f.dr_amount);
    for (int i = 0; i < n; ++i) draw_blot(haem, rng, main_site(i), rng.uniformf(0.025, 0.042) * g.R);
    // Microaneurysms accompany the haemorrhages.
    int nm = n / 2 + 2;
    for (int i = 0; i < nm; ++i)
      cv::circle(ma, sub(main_site(i)), subr(rng.uniformf(0.014, 0.02) * g.R), cv::Scalar(1.0),
                 cv::FILLED, cv::LINE_8, kShift);
    if (f.hard_exudates) {
      int clusters = static_cast<int>(rng.integer(2, 4));
      for (int c = 0; c < clusters; ++c) {
        cv::Point2f center = main_site(c);
        int dots = static_cast<int>(rng.integer(4, 8));
        for (int d = 0; d < dots; ++d) {
          cv::Point2f p = center + 0.05f * g.R * cv::Point2f(rng.uniformf(-1, 1), rng.uniformf(-1, 1));
          cv::circle(exu, sub(p), subr(rng.uniformf(0.012, 0.022) * g.R), cv::Scalar(1.0), cv::FILLED,
                     cv::LINE_8, kShift);
        }
      }
    }
    if (f.cotton_wool) {
      int n_cws = static_cast<int>(rng.integer(2, 4));
      for (int c = 0; c < n_cws; ++c) {
        cv::Point2f p = main_site(c);
        cv::Size2f axes(rng.uniformf(0.045, 0.065) * g.R, rng.uniformf(0.03, 0.045) * g.R);
        cv::ellipse(cws, cv::RotatedRect(p, axes * 2.f, rng.uniformf(0, 180)), cv::Scalar(1.0),
                    cv::FILLED, cv::LINE_8);
      }
    }
  }
  soften(ma, 0.4f);
  soften(haem, 0.8f);
  soften(exu, 0.4f);
  soften(cws, 0.018f * g.R);
  blend(canvas, cws, Vec3(0.97f, 0.93f, 0.84f), 0.9f);
  blend(canvas, haem, Vec3(0.42f, 0.03f, 0.03f), 0.92f);
  blend(canvas, ma, Vec3(0.50f, 0.03f, 0.03f), 0.95f);
  blend(canvas, exu, Vec3(1.0f, 0.90f, 0.42f), 0.95f);
}

void draw_drusen(cv::Mat& canvas, const Geometry& g, const EyeFindings& f, Rng& rng) {
  cv::Mat m = new_mask(g);
  int n = amount_count(rng, f.drusen_amount) + 2;
  for (int i = 0; i < n; ++i) {
    float a = rng.uniformf(0, 2 * kPi), r = g.R * rng.uniformf(0.04, 0.24);
    cv::Point2f p = g.macula + r * cv::Point2f(std::cos(a), std::sin(a));
    cv::circle(m, sub(p), subr(rng.uniformf(0.016, 0.032) * g.R), cv::Scalar(1.0), cv::FILLED,
               cv::LINE_8, kShift);
  }
  soften(m, 0.006f * g.R);
  blend(canvas, m, Vec3(1.0f, 0.88f, 0.50f), 0.9f);
}

/// Cataract: the whole image is blurred and veiled by a yellow-grey haze.
void draw_cataract(cv::Mat& canvas, const Geometry& g, int severity) {
  float sigma = (severity == 2 ? 0.022f : 0.012f) * g.W / 2.f;
  cv::GaussianBlur(canvas, canvas, cv::Size(0, 0), sigma);
  float veil = severity == 2 ? 0.42f : 0.25f;
  Vec3 haze(0.72f, 0.58f, 0.42f);
  canvas = canvas * (1.f - veil) + cv::Scalar(haze[0] * veil, haze[1] * veil, haze[2] * veil);
}

void finish_fov(cv::Mat& canvas, const Geometry& g, cv::RNG& crng) {
  cv::Mat grain(canvas.size(), CV_32FC3);
  crng.fill(grain, cv::RNG::NORMAL, 0.0, 0.008);
  canvas += grain;
  for (int y = 0; y < canvas.rows; ++y) {
    auto* c = canvas.ptr<Vec3>(y);
    for (int x = 0; x < canvas.cols; ++x) {
      float r = std::hypot(x + 0.5f - g.cx, y + 0.5f - g.cy);
      float m = std::clamp((g.R - r) / 1.5f + 0.5f, 0.f, 1.f);
      c[x] = c[x] * m;
    }
  }
}

// --- reports ---------------------------------------------------------------------

struct Words {
  const char *left, *right, *not_imaged, *clause_sep, *end;
  const char* quadrant[4];
  const char* amount[3];
  const char* dr[5];
  const char *micro, *haem, *exu, *cws, *nvd, *all_four;
  const char *glaucoma, *drusen, *ga, *myopia, *hypertensive, *naevus, *normal;
  const char* cataract[3];
  const char* pigment[3];
  const char *narrow, *dilated, *normal_calibre, *cdr;
};

const Words kEnglish = {
    "Left eye: ", "Right eye: ", "not imaged", "; ", ".",
    {"superior temporal", "inferior temporal", "superior nasal", "inferior nasal"},
    {"few", "several", "many"},
    {"", "mild non-proliferative diabetic retinopathy", "moderate non-proliferative diabetic retinopathy",
     "severe non-proliferative diabetic retinopathy", "proliferative diabetic retinopathy"},
    "microaneurysms", "haemorrhages", "hard exudates", "cotton-wool spots",
    "neovascularisation at the disc", "all four quadrants",
    "glaucomatous optic disc cupping", "drusen at the macula", "geographic atrophy at the macula",
    "tessellated fundus with temporal peripapillary atrophy (pathological myopia)",
    "hypertensive retinopathy with arteriovenous nicking", "choroidal naevus in the",
    "normal fundus",
    {"", "mild media haze (cataract)", "dense media haze (cataract)"},
    {"lightly pigmented fundus", "moderately pigmented fundus", "darkly pigmented fundus"},
    "narrowed, straightened arterioles", "dilated, beaded veins", "normal vessel calibre",
    "cup-to-disc ratio "};

const Words kChinese = {
    "左眼：", "右眼：", "未拍摄", "；", "。",
    {"颞上", "颞下", "鼻上", "鼻下"},
    {"少量", "数个", "大量"},
    {"", "轻度非增殖性糖尿病视网膜病变", "中度非增殖性糖尿病视网膜病变",
     "重度非增殖性糖尿病视网膜病变", "增殖性糖尿病视网膜病变"},
    "微血管瘤", "出血", "硬性渗出", "棉絮斑", "视盘新生血管", "四个象限",
    "青光眼性视杯扩大", "黄斑区玻璃膜疣", "黄斑区地图样萎缩",
    "病理性近视：豹纹状眼底，视盘颞侧萎缩弧", "高血压性视网膜病变，动静脉交叉压迹", "脉络膜痣",
    "眼底未见明显异常",
    {"", "轻度屈光间质混浊（白内障）", "重度屈光间质混浊（白内障）"},
    {"浅色素眼底", "中等色素眼底", "深色素眼底"},
    "动脉变细变直", "静脉扩张呈串珠样", "血管管径正常", "杯盘比"};

const Words& words(const std::string& language) {
  RETCLIP_CHECK_USAGE(language == "en" || language == "zh",
                      "synth: expected language \"en\" or \"zh\" but got \"", language,
                      "\". HINT: --language en|zh");
  return language == "zh" ? kChinese : kEnglish;
}

std::vector<std::string> eye_clauses(const EyeFindings& f, const std::string& language) {
  const Words& w = words(language);
  bool zh = language == "zh";
  auto q = [&](Quadrant x) { return std::string(w.quadrant[static_cast<int>(x)]); };
  auto amt = [&](Amount x) { return std::string(w.amount[static_cast<int>(x)]); };
  std::vector<std::string> c;
  if (f.dr_grade > 0) {
    std::string s = w.dr[f.dr_grade];
    std::vector<std::string> extra;
    if (f.hard_exudates) extra.push_back(w.exu);
    if (f.cotton_wool) extra.push_back(w.cws);
    if (zh) {
      if (f.dr_grade == 4) s += std::string("，") + w.nvd;
      if (f.dr_grade == 1)
        s += "，" + q(f.dr_quadrant) + "象限" + amt(f.dr_amount) + w.micro;
      else if (f.dr_grade == 3)
        s += std::string("，") + w.all_four + w.amount[2] + w.haem;
      else
        s += "，" + q(f.dr_quadrant) + "象限" + amt(f.dr_amount) + w.haem;
      for (const auto& e : extra) s += "、" + e;
    } else {
      s += " with ";
      if (f.dr_grade == 4) s += std::string(w.nvd) + ", ";
      if (f.dr_grade == 1)
        s += amt(f.dr_amount) + " " + w.micro + " in the " + q(f.dr_quadrant) + " quadrant";
      else if (f.dr_grade == 3)
        s += std::string(w.amount[2]) + " " + w.haem + " in " + w.all_four;
      else
        s += amt(f.dr_amount) + " " + w.haem + " in the " + q(f.dr_quadrant) + " quadrant";
      for (size_t i = 0; i < extra.size(); ++i)
        s += (i + 1 == extra.size() ? " and " : ", ") + extra[i];
    }
    c.push_back(s);
  }
  if (f.glaucoma) c.push_back(w.glaucoma);
  if (f.amd == 1) c.push_back(zh ? std::string("黄斑区") + amt(f.drusen_amount) + "玻璃膜疣"
                                  : amt(f.drusen_amount) + " " + w.drusen);
  if (f.amd == 2) c.push_back(w.ga);
  if (f.myopia) c.push_back(w.myopia);
  if (f.hypertensive) c.push_back(w.hypertensive);
  if (f.cataract > 0) c.push_back(w.cataract[f.cataract]);
  if (c.empty()) c.push_back(w.normal);
  if (f.naevus)
    c.push_back(zh ? q(f.naevus_quadrant) + "象限" + w.naevus
                   : std::string(w.naevus) + " " + q(f.naevus_quadrant) + " quadrant");
  if (!f.myopia) c.push_back(w.pigment[f.pigment]);
  if (f.hypertensive && f.dr_grade >= 3)
    c.push_back(std::string(w.narrow) + (zh ? "，" : " and ") + w.dilated);
  else if (f.hypertensive)
    c.push_back(w.narrow);
  else if (f.dr_grade >= 3)
    c.push_back(w.dilated);
  else
    c.push_back(w.normal_calibre);
  c.push_back(fmt::format("{}{:.1f}", w.cdr, std::round(f.cup_disc_ratio * 10.0) / 10.0));
  return c;
}

std::string join_clauses(const std::vector<std::string>& c, const Words& w) {
  std::string s;
  for (size_t i = 0; i < c.size(); ++i) s += (i ? w.clause_sep : "") + c[i];
  return s + w.end;
}

// --- data set writing ---------------------------------------------------------------

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"') out += '"';
    out += ch;
  }
  return out + "\"";
}


#ifdef RETCLIP_WITH_IMGCODECS
std::string encode_image(const cv::Mat& rgb, const std::string& image_format) {
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<uchar> buf;
  std::vector<int> params;
  if (image_format == "png")
    params = {cv::IMWRITE_PNG_COMPRESSION, 3};
  else
    params = {cv::IMWRITE_JPEG_QUALITY, 95};
  RETCLIP_CHECK(cv::imencode("." + image_format, bgr, buf, params),
                "synth: OpenCV could not encode a ", rgb.cols, "x", rgb.rows, " image as ",
                image_format, ". HINT: check that OpenCV was built with ", image_format, " support");
  return std::string(buf.begin(), buf.end());
}
#endif

/// One patient ready to write: the patient plus the encoded eyes.
struct Encoded {
  SynthPatient patient;
  std::string left_bytes, right_bytes;
};

void write_bytes(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  RETCLIP_CHECK(out.good(), "synth: could not write ", path.string(),
                ". HINT: check free disk space and permissions of the output folder");
}

void validate(const SynthOptions& o) {
  RETCLIP_CHECK_USAGE(o.patients >= 1, "synth: expected --patients >= 1 but got ", o.patients);
  RETCLIP_CHECK_USAGE(o.size >= 32 && o.size <= 4096,
                      "synth: expected --size in [32, 4096] pixels but got ", o.size);
  words(o.language);
  RETCLIP_CHECK_USAGE(o.format == "manifest" || o.format == "retclip",
                      "synth: expected --format manifest or retclip but got \"", o.format, "\"");
  RETCLIP_CHECK_USAGE(o.image_format == "png" || o.image_format == "jpg",
                      "synth: expected --image-format png or jpg but got \"", o.image_format, "\"");
  RETCLIP_CHECK_USAGE(o.missing_eye_rate >= 0 && o.missing_eye_rate <= 1,
                      "synth: expected --missing-eye-rate in [0, 1] but got ", o.missing_eye_rate);
  RETCLIP_CHECK_USAGE(o.val >= -1 && o.val < o.patients,
                      "synth: expected --val in [0, patients) (or -1 for automatic) but got ",
                      o.val, " with ", o.patients,
                      " patients. HINT: at least one patient must remain for training");
}

}  // namespace

// -------------------------------------------------------------------------------------

std::string synth_patient_id(int64_t index) { return fmt::format("P{:06d}", index); }

int64_t synth_val_count(const SynthOptions& opts) {
  if (opts.val >= 0) return opts.val;
  if (opts.patients < 2) return 0;
  return std::min<int64_t>(200, (opts.patients + 9) / 10);
}

PatientFindings synth_findings(const SynthOptions& opts, int64_t index) {
  Rng rng(mix_seed(opts.seed, static_cast<uint64_t>(index), 1));
  PatientFindings pf;
  EyeFindings* eyes[2] = {&pf.left, &pf.right};
  pf.left.eye = Eye::kLeft;
  pf.right.eye = Eye::kRight;
  pf.left.render_seed = mix_seed(opts.seed, static_cast<uint64_t>(index), 2);
  pf.right.render_seed = mix_seed(opts.seed, static_cast<uint64_t>(index), 3);

  // Patient-level conditions, then per-eye expression of each.
  int pigment = rng.pick({0.3, 0.45, 0.25});
  bool diabetic = rng.chance(0.36);
  int base_grade = 1 + rng.pick({0.35, 0.3, 0.17, 0.18});
  bool glaucoma = rng.chance(0.15), amd = rng.chance(0.14), cataract = rng.chance(0.12);
  bool myopia = rng.chance(0.12), hypertensive = rng.chance(0.12);
  // "At least one eye" for asymmetric diseases: one eye is certain, the other likely.
  int glaucoma_sure = static_cast<int>(rng.integer(0, 1));
  int amd_sure = static_cast<int>(rng.integer(0, 1));
  int cataract_sure = static_cast<int>(rng.integer(0, 1));
  for (int e = 0; e < 2; ++e) {
    EyeFindings& f = *eyes[e];
    f.pigment = pigment;
    int delta = rng.pick({0.2, 0.6, 0.2}) - 1;
    f.dr_grade = diabetic ? std::clamp(base_grade + delta, 0, 4) : 0;
    f.dr_quadrant = random_quadrant(rng);
    f.dr_amount = static_cast<Amount>(rng.pick({0.35, 0.4, 0.25}));
    if (f.dr_grade == 1) f.dr_amount = static_cast<Amount>(rng.pick({0.6, 0.4}));
    if (f.dr_grade == 3) f.dr_amount = Amount::kMany;
    bool exu = rng.chance(0.55), cws = rng.chance(0.4);
    f.hard_exudates = f.dr_grade >= 2 && exu;
    f.cotton_wool = f.dr_grade == 3 || (f.dr_grade >= 2 && cws);
    bool g_eye = rng.chance(0.75);
    f.glaucoma = glaucoma && (e == glaucoma_sure || g_eye);
    double cdr_normal = rng.uniform(0.2, 0.4), cdr_glaucoma = rng.uniform(0.6, 0.9);
    f.cup_disc_ratio = f.glaucoma ? cdr_glaucoma : cdr_normal;
    bool a_eye = rng.chance(0.75);
    bool ga = rng.chance(0.25);
    f.amd = amd && (e == amd_sure || a_eye) ? (ga ? 2 : 1) : 0;
    f.drusen_amount = static_cast<Amount>(rng.pick({0.3, 0.4, 0.3}));
    bool c_eye = rng.chance(0.7);
    int c_sev = 1 + rng.pick({0.6, 0.4});
    f.cataract = cataract && (e == cataract_sure || c_eye) ? c_sev : 0;
    f.myopia = myopia;
    f.hypertensive = hypertensive;
    bool nv = rng.chance(0.12);
    f.naevus = nv;
    f.naevus_quadrant = random_quadrant(rng);
  }
  // Missing eyes come from their own stream so the rate does not move other findings.
  Rng miss(mix_seed(opts.seed, static_cast<uint64_t>(index), 4));
  if (miss.chance(opts.missing_eye_rate)) eyes[miss.integer(0, 1)]->present = false;
  return pf;
}

cv::Mat synth_eye(const EyeFindings& f, int size) {
  RETCLIP_CHECK_USAGE(size >= 16, "synth: expected an image size >= 16 pixels but got ", size);
  // Work at twice the output size (at least 256 px) for smooth, thin structures.
  int w = size < 384 ? 2 * size : size;
  Geometry g;
  Rng rng(mix_seed(f.render_seed, 21, 0));  // geometry and background
  Rng lrng(mix_seed(f.render_seed, 22, 0)); // lesion sites
  cv::RNG crng(mix_seed(f.render_seed, 23, 0));
  g.W = static_cast<float>(w);
  g.cx = g.cy = g.W / 2.f;
  g.R = g.W * rng.uniformf(0.455, 0.47);
  g.disc = cv::Point2f(g.cx + rng.uniformf(0.36, 0.43) * g.R, g.cy + rng.uniformf(-0.06, 0.04) * g.R);
  g.rd = rng.uniformf(0.14, 0.16) * g.R;
  g.cup = static_cast<float>(f.cup_disc_ratio) * g.rd;
  g.macula = cv::Point2f(g.cx - rng.uniformf(0.0, 0.08) * g.R, g.disc.y + rng.uniformf(0.02, 0.08) * g.R);

  cv::Mat canvas(w, w, CV_32FC3);
  draw_background(canvas, g, f, rng, crng);
  if (f.myopia) draw_tessellation(canvas, g, rng);
  draw_macula(canvas, g, rng);
  if (f.amd == 2) draw_geographic_atrophy(canvas, g, lrng);
  if (f.amd == 1) draw_drusen(canvas, g, f, lrng);
  if (f.naevus) draw_naevus(canvas, g, f, lrng);
  if (f.myopia) draw_ppa(canvas, g, rng);
  draw_disc(canvas, g, rng);
  draw_vessels(canvas, g, f, f.render_seed);
  if (f.dr_grade == 4) draw_nvd(canvas, g, lrng);
  if (f.dr_grade > 0) draw_dr(canvas, g, f, lrng);
  if (f.cataract > 0) draw_cataract(canvas, g, f.cataract);
  finish_fov(canvas, g, crng);

  cv::Mat out;
  if (w != size) cv::resize(canvas, canvas, cv::Size(size, size), 0, 0, cv::INTER_AREA);
  canvas.convertTo(out, CV_8UC3, 255.0);
  if (f.eye == Eye::kLeft) cv::flip(out, out, 1);
  return out;
}

std::string eye_report(const EyeFindings& f, const std::string& language) {
  const Words& w = words(language);
  if (!f.present) return "";
  std::string s = join_clauses(eye_clauses(f, language), w);
  if (language == "en" && !s.empty()) s[0] = static_cast<char>(std::toupper(s[0]));
  return s;
}

std::string patient_report(const PatientFindings& f, const std::string& language) {
  const Words& w = words(language);
  auto one = [&](const EyeFindings& e) {
    return e.present ? join_clauses(eye_clauses(e, language), w) : std::string(w.not_imaged) + w.end;
  };
  return std::string(w.left) + one(f.left) + (language == "zh" ? "" : " ") + w.right + one(f.right);
}

std::vector<std::string> eye_labels(const EyeFindings& f) {
  if (!f.present) return {};
  std::vector<std::string> l;
  if (f.dr_grade > 0) l.push_back(fmt::format("dr{}", f.dr_grade));
  if (f.glaucoma) l.push_back("glaucoma");
  if (f.amd == 1) l.push_back("drusen");
  if (f.amd == 2) l.push_back("ga");
  if (f.cataract > 0) l.push_back("cataract");
  if (f.myopia) l.push_back("myopia");
  if (f.hypertensive) l.push_back("hypertensive");
  if (f.naevus) l.push_back("naevus");
  if (l.empty()) l.push_back("normal");
  return l;
}

SynthPatient synth_patient(const SynthOptions& opts, int64_t index) {
  SynthPatient p;
  p.patient_id = synth_patient_id(index);
  p.findings = synth_findings(opts, index);
  const auto& f = p.findings;
  if (f.left.present) p.left = synth_eye(f.left, opts.size);
  if (f.right.present) p.right = synth_eye(f.right, opts.size);
  p.report = patient_report(f, opts.language);
  p.left_report = eye_report(f.left, opts.language);
  p.right_report = eye_report(f.right, opts.language);
  p.left_labels = eye_labels(f.left);
  p.right_labels = eye_labels(f.right);
  // Patient labels: the union in a fixed order; "normal" only when nothing else.
  static const char* kOrder[] = {"dr1",     "dr2",    "dr3",          "dr4",   "glaucoma", "drusen",
                                 "ga",      "cataract", "myopia", "hypertensive", "naevus"};
  for (const char* code : kOrder) {
    auto has = [&](const std::vector<std::string>& v) {
      return std::find(v.begin(), v.end(), code) != v.end();
    };
    if (has(p.left_labels) || has(p.right_labels)) p.patient_labels.push_back(code);
  }
  if (p.patient_labels.empty()) p.patient_labels.push_back("normal");
  return p;
}

cv::Mat synth_preview(const std::vector<SynthPatient>& patients) {
  const int n = static_cast<int>(std::min<size_t>(16, patients.size()));
  RETCLIP_CHECK(n > 0, "synth: a preview needs at least one patient");
  int size = 0;
  for (int i = 0; i < n; ++i) size = std::max({size, patients[i].left.cols, patients[i].right.cols});
  int eye = std::clamp(size, 96, 192), caption = 30, pad = 6;
  int cols = std::min(4, n), rows = (n + 3) / 4;
  int cw = 2 * eye + pad, ch = eye + caption;
  cv::Mat sheet(rows * ch + pad, cols * cw + pad, CV_8UC3, cv::Scalar(24, 24, 24));
  for (int i = 0; i < n; ++i) {
    const auto& p = patients[i];
    int x0 = pad + (i % 4) * cw, y0 = pad + (i / 4) * ch;
    const cv::Mat* eyes[2] = {&p.left, &p.right};
    for (int e = 0; e < 2; ++e) {
      if (eyes[e]->empty()) continue;
      cv::Mat scaled;
      cv::resize(*eyes[e], scaled, cv::Size(eye, eye), 0, 0, cv::INTER_AREA);
      scaled.copyTo(sheet(cv::Rect(x0 + e * eye, y0 + caption, eye, eye)));
    }
    double fs = 0.36;
    cv::putText(sheet, p.patient_id + "  (L | R)", cv::Point(x0, y0 + 11), cv::FONT_HERSHEY_SIMPLEX,
                fs, cv::Scalar(235, 235, 235), 1, cv::LINE_AA);
    std::string lab = "L:" + (p.left.empty() ? std::string("-") : join(p.left_labels, ";")) +
                      "  R:" + (p.right.empty() ? std::string("-") : join(p.right_labels, ";"));
    // Long label lists are cut to the cell width.
    int baseline = 0;
    while (lab.size() > 4 &&
           cv::getTextSize(lab, cv::FONT_HERSHEY_SIMPLEX, fs, 1, &baseline).width > 2 * eye) {
      lab.resize(lab.size() - 3);
      lab += "..";
    }
    cv::putText(sheet, lab, cv::Point(x0, y0 + 25), cv::FONT_HERSHEY_SIMPLEX, fs,
                cv::Scalar(255, 220, 120), 1, cv::LINE_AA);
  }
  return sheet;
}

SynthSummary synth_dataset(const SynthOptions& opts, const std::string& out_dir) {
  validate(opts);
#ifndef RETCLIP_WITH_IMGCODECS
  (void)out_dir;
  throw Error(
      "synth: this build has no image encoding (RETCLIP_WITH_IMGCODECS is OFF), so it cannot "
      "write a data set. HINT: reconfigure with -DRETCLIP_WITH_IMGCODECS=ON; synth_patient() "
      "still works in memory");
#else
  namespace fs = std::filesystem;
  const auto t0 = std::chrono::steady_clock::now();
  const fs::path root(out_dir);
  const bool manifest = opts.format == "manifest";
  std::error_code ec;
  fs::create_directories(manifest ? root / "images" : root, ec);
  RETCLIP_CHECK_USAGE(!ec, "synth: cannot create the output folder ", root.string(), ": ",
                      ec.message(), ". HINT: choose a writable --out");

  const int64_t n = opts.patients, n_val = synth_val_count(opts), n_train = n - n_val;
  int threads = opts.threads > 0 ? opts.threads : static_cast<int>(util::available_cores());
  threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n)));
  const std::string ext = opts.image_format;

  std::string train_csv, val_csv, jsonl, texts[2], tsv[2];
  const std::string header =
      "patient_id,left_image,right_image,report,left_report,right_report,split,left_labels,"
      "right_labels,patient_labels\n";
  train_csv = val_csv = header;
  int64_t text_id[2] = {0, 0};
  std::vector<SynthPatient> preview;
  SynthSummary summary;
  summary.train = n_train;
  summary.val = n_val;

  util::Progress bar("synth", n, "patients");
  // Blocks of patients are generated in parallel and appended in index order, so the
  // output bytes do not depend on the thread count and memory stays bounded.
  const int64_t block = std::max<int64_t>(64, 16 * threads);
  std::vector<Encoded> done;
  for (int64_t b0 = 0; b0 < n; b0 += block) {
    const int64_t b1 = std::min(n, b0 + block);
    done.assign(static_cast<size_t>(b1 - b0), Encoded{});
    std::atomic<int64_t> next{b0};
    std::exception_ptr failure;
    std::mutex failure_mu;
    auto work = [&] {
      try {
        for (int64_t i = next++; i < b1; i = next++) {
          Encoded& e = done[static_cast<size_t>(i - b0)];
          e.patient = synth_patient(opts, i);
          if (!e.patient.left.empty()) e.left_bytes = encode_image(e.patient.left, ext);
          if (!e.patient.right.empty()) e.right_bytes = encode_image(e.patient.right, ext);
          if (manifest) {
            const std::string& pid = e.patient.patient_id;
            if (!e.left_bytes.empty()) write_bytes(root / "images" / (pid + "_L." + ext), e.left_bytes);
            if (!e.right_bytes.empty()) write_bytes(root / "images" / (pid + "_R." + ext), e.right_bytes);
          }
        }
      } catch (...) {
        std::lock_guard<std::mutex> lock(failure_mu);
        if (!failure) failure = std::current_exception();
        next = b1;
      }
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
    if (failure) std::rethrow_exception(failure);

    for (int64_t i = b0; i < b1; ++i) {
      Encoded& e = done[static_cast<size_t>(i - b0)];
      const SynthPatient& p = e.patient;
      const bool is_val = i >= n_train;
      const std::string split = is_val ? "val" : "train";
      summary.missing_eyes += (p.left.empty() ? 1 : 0) + (p.right.empty() ? 1 : 0);
      std::string li = p.left.empty() ? "" : "images/" + p.patient_id + "_L." + ext;
      std::string ri = p.right.empty() ? "" : "images/" + p.patient_id + "_R." + ext;
      if (manifest) {
        std::string row = join({p.patient_id, li, ri, csv_field(p.report), csv_field(p.left_report),
                                csv_field(p.right_report), split, join(p.left_labels, ";"),
                                join(p.right_labels, ";"), join(p.patient_labels, ";")},
                               ",");
        (is_val ? val_csv : train_csv) += row + "\n";
        nlohmann::ordered_json j = {{"patient_id", p.patient_id},
                            {"left_image", li},
                            {"right_image", ri},
                            {"report", p.report},
                            {"left_report", p.left_report},
                            {"right_report", p.right_report},
                            {"split", split},
                            {"left_labels", join(p.left_labels, ";")},
                            {"right_labels", join(p.right_labels, ";")},
                            {"patient_labels", join(p.patient_labels, ";")}};
        jsonl += j.dump() + "\n";
      } else {
        int s = is_val ? 1 : 0;
        nlohmann::ordered_json j = {{"text_id", text_id[s]++},
                            {"text", p.report},
                            {"image_ids", {p.patient_id}},
                            {"left_text", p.left_report},
                            {"right_text", p.right_report}};
        texts[s] += j.dump() + "\n";
        tsv[s] += p.patient_id + "\t" + base64_encode(e.left_bytes, /*urlsafe=*/true) + "\t" +
                  base64_encode(e.right_bytes, /*urlsafe=*/true) + "\n";
      }
      if (opts.preview && preview.size() < 16) preview.push_back(p);
    }
    bar.advance(b1 - b0);
  }
  bar.finish();

  if (manifest) {
    util::write_file_atomic(root / "train.csv", train_csv);
    util::write_file_atomic(root / "val.csv", val_csv);
    util::write_file_atomic(root / "all.jsonl", jsonl);
  } else {
    util::write_file_atomic(root / "train_texts.jsonl", texts[0]);
    util::write_file_atomic(root / "train_imgs.tsv", tsv[0]);
    util::write_file_atomic(root / "valid_texts.jsonl", texts[1]);
    util::write_file_atomic(root / "valid_imgs.tsv", tsv[1]);
  }
  if (opts.preview) util::write_file_atomic(root / "preview.png", encode_image(synth_preview(preview), "png"));
  summary.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return summary;
#endif
}

}  // namespace retclip::data
