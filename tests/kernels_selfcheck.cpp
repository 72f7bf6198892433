// Self-check of the native kernels without Python, for a compile-and-run check on any target
// (e.g. aarch64 under qemu-user, see tests/test_engine_isa.py). Includes the kernels' source and
// compares, in float64, the BatchNorm + LIF forward (NCHW and channels_last, soft and hard
// reset, SEW residual), the batch statistics, the spike convolution and the fused stem with
// naive loops. All inputs are small dyadic rationals and tau = 2, so every result is exact
// whatever the summation order or FMA use: the comparisons are bitwise. Prints one line per
// check and exits non-zero on a mismatch.
#include "../snnexp/engine/kernels.cpp"

#include <array>
#include <cstdio>
#include <random>

namespace {

std::mt19937 rng(7);
double dy(int lo, int hi, int den) {  // a dyadic value lo/den .. hi/den
  return double(std::uniform_int_distribution<int>(lo, hi)(rng)) / den;
}
int failures = 0;
void report(const char* name, double worst) {
  std::printf("%-44s %s (max |diff| %g)\n", name, worst == 0 ? "ok" : "MISMATCH", worst);
  if (worst != 0) ++failures;
}
// One output value of a naive convolution: the sum over input channels and taps of
// xv(ci, iy, ix) * wv(ci, r, d), zero padding.
template <typename X, typename Wt>
double conv_at(X&& xv, Wt&& wv, int64_t Cin, int64_t H, int64_t W, int64_t k, int64_t s,
               int64_t pad, int64_t oy, int64_t ox) {
  double a = 0;
  for (int64_t ci = 0; ci < Cin; ++ci)
    for (int64_t r = 0; r < k; ++r)
      for (int64_t d = 0; d < k; ++d) {
        const int64_t iy = oy * s + r - pad, ix = ox * s + d - pad;
        if (iy >= 0 && iy < H && ix >= 0 && ix < W) a += xv(ci, iy, ix) * wv(ci, r, d);
      }
  return a;
}
double lif(double& v, double y, bool hard) {  // the header's neuron, tau 2, thr 1, v_reset 0
  const double h = v + (y - (v - 0.0)) / 2.0;
  const double s = h >= 1.0 ? 1.0 : 0.0;
  v = hard ? s * 0.0 + (1.0 - s) * h : h - s * 1.0;
  return s;
}

void check_fwd(bool cl, bool hard, bool res) {
  const int64_t K = 4, B = 3, C = 13, H = 5, W = 7, M = B * C * H * W;
  std::vector<double> x(K * M), sc(K * C), sh(K * C), r(K * M), v0(M), v(M), out(K * M);
  for (auto& e : x) e = dy(-32, 48, 16);
  for (auto& e : r) e = dy(0, 1, 1);
  for (auto& e : v0) e = dy(0, 16, 16);
  for (int64_t i = 0; i < K * C; ++i) sc[i] = dy(4, 16, 8), sh[i] = dy(-4, 8, 8);
  const int64_t inner = cl ? 1 : H * W, units = cl ? B * H * W : B * C;
  snn_fwd_par_f64(x.data(), sc.data(), sh.data(), v0.data(), 0.0, v.data(), out.data(),
                  res ? r.data() : nullptr, K, M, C, inner, 2.0, 1.0, 0.0, hard, 1, 0, units, 2);
  double worst = 0;
  std::vector<double> vr = v0;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t i = 0; i < M; ++i) {
      const int64_t c = cl ? i % C : (i / (H * W)) % C;
      const double s = lif(vr[i], x[k * M + i] * sc[k * C + c] + sh[k * C + c], hard);
      worst = std::max(worst, std::fabs(out[k * M + i] - (s + (res ? r[k * M + i] : 0.0))));
    }
  for (int64_t i = 0; i < M; ++i) worst = std::max(worst, std::fabs(v[i] - vr[i]));
  char name[64];
  std::snprintf(name, sizeof name, "BN+LIF forward %s %s%s", cl ? "channels_last" : "nchw",
                hard ? "hard" : "soft", res ? " + residual" : "");
  report(name, worst);
}

void check_stats(bool cl) {
  const int64_t K = 3, B = 2, C = 11, H = 6, W = 9, M = B * C * H * W;
  std::vector<double> x(K * M), ref(K * C, 0.0), s1(2 * K * C), s2(2 * K * C);
  for (auto& e : x) e = dy(-64, 64, 32);
  snn_stats_par_f64(x.data(), ref.data(), s1.data(), s2.data(), K, M, C, cl ? 1 : H * W,
                    cl ? B * H * W : B * C, 2);
  std::vector<double> w1(K * C, 0.0), w2(K * C, 0.0);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t i = 0; i < M; ++i) {
      const int64_t c = cl ? i % C : (i / (H * W)) % C;
      w1[k * C + c] += x[k * M + i];
      w2[k * C + c] += x[k * M + i] * x[k * M + i];
    }
  double worst = 0;
  for (int64_t i = 0; i < K * C; ++i) {
    worst = std::max(worst, std::fabs(s1[i] + s1[K * C + i] - w1[i]));
    worst = std::max(worst, std::fabs(s2[i] + s2[K * C + i] - w2[i]));
  }
  report(cl ? "batch statistics channels_last" : "batch statistics nchw", worst);
}

void check_spike_conv(int64_t Cin, int64_t C, int64_t s, bool cl) {
  const int64_t N = 3, H = 11, W = 13, k = 3, pad = 1;
  const int64_t Ho = (H + 2 * pad - k) / s + 1, Wo = (W + 2 * pad - k) / s + 1, G = (Cin + 7) / 8;
  std::vector<double> x(N * Cin * H * W), w(k * k * Cin * C), tab(k * k * G * 256 * C, 0.0);
  std::vector<double> out(N * Ho * Wo * C);
  for (auto& e : x) e = std::uniform_int_distribution<int>(0, 3)(rng) == 0 ? 1.0 : 0.0;
  for (auto& e : w) e = dy(-64, 64, 64);
  for (int64_t t = 0; t < k * k; ++t)  // tab[t][g][m][c]: sum of the weights of m's bits
    for (int64_t g = 0; g < G; ++g)
      for (int64_t m = 0; m < 256; ++m)
        for (int64_t j = 0; j < 8 && g * 8 + j < Cin; ++j)
          if (m >> j & 1)
            for (int64_t c = 0; c < C; ++c)
              tab[((t * G + g) * 256 + m) * C + c] += w[(t * Cin + g * 8 + j) * C + c];
  const int64_t sn = Cin * H * W, sc = cl ? 1 : H * W, sh = cl ? W * Cin : W, sw = cl ? Cin : 1;
  auto at = [&](int64_t n, int64_t ci, int64_t y, int64_t xx) {
    return n * sn + ci * sc + y * sh + xx * sw;
  };
  int bad = 0;
  snn_spike_conv_par_f64(x.data(), sn, sc, sh, sw, tab.data(), out.data(), Cin, C, H, W, k, s,
                         pad, Ho, Wo, &bad, N * Ho, 2);
  double worst = bad ? 1.0 : 0.0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oy = 0; oy < Ho; ++oy)
      for (int64_t ox = 0; ox < Wo; ++ox)
        for (int64_t c = 0; c < C; ++c) {
          const double a = conv_at(
              [&](int64_t ci, int64_t iy, int64_t ix) { return x[at(n, ci, iy, ix)]; },
              [&](int64_t ci, int64_t r, int64_t d) { return w[((r * k + d) * Cin + ci) * C + c]; },
              Cin, H, W, k, s, pad, oy, ox);
          worst = std::max(worst, std::fabs(out[((n * Ho + oy) * Wo + ox) * C + c] - a));
        }
  x[at(N - 1, Cin - 1, H - 1, W - 1)] = 2.0;  // a non-spike value: the kernel declines
  bad = 0;
  snn_spike_conv_par_f64(x.data(), sn, sc, sh, sw, tab.data(), out.data(), Cin, C, H, W, k, s,
                         pad, Ho, Wo, &bad, N * Ho, 2);
  if (!bad) worst = std::max(worst, 1.0);
  char name[64];
  std::snprintf(name, sizeof name, "spike conv %lld->%lld stride %lld %s", (long long)Cin,
                (long long)C, (long long)s, cl ? "channels_last" : "nchw");
  report(name, worst);
}

void check_stem(int64_t C, bool hard) {
  const int64_t K = 3, B = 2, Cin = 2, H = 9, W = 11;
  std::vector<double> x(K * B * Cin * H * W), wt(Cin * 9 * C), sc(C), sh(C), v(B * H * W * C);
  std::vector<double> out(K * B * H * W * C);
  for (auto& e : x) e = dy(0, 3, 1);
  for (auto& e : wt) e = dy(-32, 48, 32);
  for (int64_t c = 0; c < C; ++c) sc[c] = dy(4, 16, 8), sh[c] = dy(-4, 4, 8);
  snn_conv_lif_par_f64(x.data(), Cin * H * W, H * W, W, 1, wt.data(), sc.data(), sh.data(),
                       nullptr, 0.0, v.data(), out.data(), K, B, Cin, C, H, W, 1, 2.0, 1.0, 0.0,
                       hard, B * H, 2);
  std::vector<double> vr(B * H * W * C, 0.0);
  double worst = 0;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w)
          for (int64_t c = 0; c < C; ++c) {
            const double a = conv_at(
                [&](int64_t ci, int64_t hh, int64_t ww) {
                  return x[(((k * B + b) * Cin + ci) * H + hh) * W + ww];
                },
                [&](int64_t ci, int64_t r, int64_t d) {
                  return wt[((ci * 3 + r) * 3 + d) * C + c];
                },
                Cin, H, W, 3, 1, 1, h, w);
            const int64_t p = ((b * H + h) * W + w) * C + c;
            const double s = lif(vr[p], a * sc[c] + sh[c], hard);
            worst = std::max(worst, std::fabs(out[((k * B + b) * H + h) * W * C + w * C + c] - s));
          }
  for (int64_t i = 0; i < B * H * W * C; ++i) worst = std::max(worst, std::fabs(v[i] - vr[i]));
  char name[64];
  std::snprintf(name, sizeof name, "stem conv+BN+LIF 2->%lld %s", (long long)C,
                hard ? "hard" : "soft");
  report(name, worst);
}

}  // namespace

int main() {
  const char* paths[] = {"portable", "avx2", "avx512"};
  std::printf("kernel path: %s\n", paths[snn_isa()]);
  for (bool cl : {false, true}) {
    check_stats(cl);
    for (bool hard : {false, true}) check_fwd(cl, hard, false);
    check_fwd(cl, false, true);
    for (auto [cin, c, s] : {std::array<int64_t, 3>{16, 16, 2}, {16, 16, 1}, {24, 24, 1},
                             {32, 32, 1}, {13, 9, 2}})
      check_spike_conv(cin, c, s, cl);
  }
  for (int64_t c : {16, 5}) check_stem(c, false);
  check_stem(16, true);
  std::printf("%s\n", failures ? "FAILED" : "all ok");
  return failures ? 1 : 0;
}
