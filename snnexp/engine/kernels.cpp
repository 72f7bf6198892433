// Fused per-time-step BatchNorm + LIF kernels for chunked SNN execution on CPU, and the
// inference-side passes built on them: the stem's conv + LIF, LIF + max-pool, and the
// table-lookup convolution of spike inputs (see each section).
//
// Plain C ABI (no torch headers): compiles in ~8 s with g++ -O3 (once), loaded with ctypes.
// A chunk of K steps is time-major: step k's data is the contiguous block x[k*M, (k+1)*M).
// Within a step the layout is NCHW ("inner" = H*W, channel constant along a run) or
// channels_last ("inner" = 1, channel = index % C). Work is split over "units": rows (b, c)
// of H*W elements (NCHW) or pixels of C elements (channels_last); callers run disjoint unit
// ranges in parallel threads (ctypes releases the GIL).
//
// Every kernel walks tiles of at most TILE elements of one step's block: in NCHW a tile lies in
// one row (one channel: scalar coefficients), in channels_last it holds whole pixels, so the
// per-channel coefficients are rows "expanded" once per call to the tile's channel pattern.
// Both give flat, vectorisable inner loops.
//
// Neuron: SpikingJelly LIF with decay_input: h = v + (y - (v - v_reset)) / tau, spike =
// h >= thr, soft reset v = h - spike * thr or hard reset v = spike * v_reset + (1 - spike) * h.
// Arithmetic follows SpikingJelly's reference order (division by tau, no contraction), so
// float64 results match the per-step path to rounding.

#if defined(__AVX512F__)
#define SNN_ISA 2
#elif defined(__AVX2__) && defined(__FMA__)
#define SNN_ISA 1
#else
#define SNN_ISA 0
#endif
#if SNN_ISA > 0
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

// ---------------------------------------------------------------------------------- ISA layer
// The few operations the kernels spell out per instruction set, as thin wrappers: AVX-512
// (SNN_ISA 2), AVX2 + FMA (1, 8 floats per register) and portable C++ (0: ARM, x86 without
// AVX2). The path is fixed at build time by -march (native: the machine's own; x86-64-v3: AVX2;
// x86-64-v2: portable). Kernel bodies are written once over these; everything else is plain
// loops under `omp simd` that the compiler vectorises for the target.
namespace isa {

// Elements of T per vector register (portable: one byte of mask bits per call).
template <typename T>
constexpr int lanes() {
  return SNN_ISA == 2 ? int(64 / sizeof(T)) : SNN_ISA == 1 ? int(32 / sizeof(T)) : 8;
}

// Bit i (i < n <= lanes<T>()) set where p[i] != 0; bad |= some p[i] is neither 0 nor 1 (NaN
// included). Reads p[0, n) only.
template <typename T>
inline unsigned nonzero_bits(const T* p, int n, bool& bad) {
  unsigned nz = 0, ne1 = 0;
#if SNN_ISA > 0
  const unsigned live = (1u << n) - 1;
#endif
#if SNN_ISA == 2
  if constexpr (sizeof(T) == 4) {
    const __m512 v = _mm512_maskz_loadu_ps(__mmask16(live), p);
    nz = _mm512_mask_cmp_ps_mask(__mmask16(live), v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
    ne1 = _mm512_mask_cmp_ps_mask(__mmask16(live), v, _mm512_set1_ps(1.f), _CMP_NEQ_UQ);
  } else {
    const __m512d v = _mm512_maskz_loadu_pd(__mmask8(live), p);
    nz = _mm512_mask_cmp_pd_mask(__mmask8(live), v, _mm512_setzero_pd(), _CMP_NEQ_UQ);
    ne1 = _mm512_mask_cmp_pd_mask(__mmask8(live), v, _mm512_set1_pd(1.0), _CMP_NEQ_UQ);
  }
#elif SNN_ISA == 1
  if constexpr (sizeof(T) == 4) {
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4,
                                                                                   5, 6, 7));
    const __m256 v = n == 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m);
    nz = unsigned(_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_NEQ_UQ)));
    ne1 = unsigned(_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_set1_ps(1.f), _CMP_NEQ_UQ)));
  } else {
    const __m256i m = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
    const __m256d v = n == 4 ? _mm256_loadu_pd(p) : _mm256_maskload_pd(p, m);
    nz = unsigned(_mm256_movemask_pd(_mm256_cmp_pd(v, _mm256_setzero_pd(), _CMP_NEQ_UQ)));
    ne1 = unsigned(_mm256_movemask_pd(_mm256_cmp_pd(v, _mm256_set1_pd(1.0), _CMP_NEQ_UQ)));
  }
  nz &= live;
  ne1 &= live;
#else
  for (int i = 0; i < n; ++i) {
    nz |= unsigned(p[i] != T(0)) << i;
    ne1 |= unsigned(p[i] != T(1)) << i;  // NaN: != is true
  }
#endif
  bad |= (nz & ne1) != 0;
  return nz;
}

// Non-temporal store of one 64-byte line (dst 64-byte aligned): written in full, so it bypasses
// the cache without a read for ownership. Only where can_stream; fence() orders the stores.
constexpr bool can_stream = SNN_ISA > 0;
inline void stream_line(float* dst, const float* src) {
#if SNN_ISA == 2
  _mm512_stream_ps(dst, _mm512_loadu_ps(src));
#elif SNN_ISA == 1
  _mm256_stream_ps(dst, _mm256_loadu_ps(src));
  _mm256_stream_ps(dst + 8, _mm256_loadu_ps(src + 8));
#else
  std::memcpy(dst, src, 64);
#endif
}
inline void fence() {
#if SNN_ISA > 0
  _mm_sfence();
#endif
}

// a * b + c, fused (one rounding) where the hardware has FMA; otherwise two roundings (a
// software fma call per element would cost more than the whole kernel).
template <typename T>
inline T fmadd(T a, T b, T c) {
#if SNN_ISA > 0 || defined(__FMA__) || defined(__aarch64__) || defined(__ARM_FEATURE_FMA)
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

}  // namespace isa

namespace {

constexpr int64_t TILE = 512;

struct Lif {
  double tau, thr, vr;
  int hard;          // 0 soft reset, 1 hard reset to vr
  int detach_reset;  // reset path excluded from the gradient
  int sg_id;         // 0 sigmoid, 1 atan, 2 triangular, 3 fast sigmoid
  double alpha;
  int lif;           // 0: no neuron (plain per-step affine, i.e. BatchNorm only)
};

struct Geo {
  int64_t K, M, C, inner;
  bool cl() const { return inner == 1; }
};

// Tiles [off, off + n) of one step's block within units [u0, u1); c is the tile's channel
// (NCHW) or -1 (channels_last: whole pixels, channel = (i - off) % C).
template <typename F>
inline void for_tiles(const Geo& g, int64_t u0, int64_t u1, F&& f) {
  if (g.cl()) {
    int64_t per = TILE / g.C > 0 ? TILE / g.C : 1;
    for (int64_t u = u0; u < u1; u += per) {
      int64_t nu = (u + per <= u1) ? per : u1 - u;
      f(u * g.C, nu * g.C, int64_t(-1));
    }
  } else {
    for (int64_t u = u0; u < u1; ++u) {
      int64_t c = u % g.C;
      for (int64_t i = 0; i < g.inner; i += TILE) {
        f(u * g.inner + i, (i + TILE <= g.inner) ? TILE : g.inner - i, c);
      }
    }
  }
}

// Per-step coefficient rows [K][width] with row k, position i = src[k * C + i % C].
template <typename T>
std::vector<T> expand(const T* src, const Geo& g) {
  if (!src) return {};
  int64_t width = g.C > TILE ? g.C : TILE;
  std::vector<T> out(g.K * width);
  for (int64_t k = 0; k < g.K; ++k)
    for (int64_t i = 0; i < width; ++i) out[k * width + i] = src[k * g.C + i % g.C];
  return out;
}

inline int64_t width(const Geo& g) { return g.C > TILE ? g.C : TILE; }

// Prefetch the next tile of a step's stream (the n elements after p[0, n)): the K streams of a
// tile are short runs far apart, too short for the hardware prefetcher to pick up.
template <typename T>
inline void prefetch_next(const T* p, int64_t n) {
  const char* c = reinterpret_cast<const char*>(p + n);
  for (int64_t b = 0; b < int64_t(sizeof(T)) * n; b += 64) __builtin_prefetch(c + b, 0, 3);
}

// One LIF step of the header's neuron: charge h from membrane v and input y, fire s = h >= thr,
// reset v; returns s and leaves h in h_out (the backward recomputes it).
template <typename T, bool HARD>
inline T lif_step(T& v, T y, T tau, T thr, T vr, T& h_out) {
  const T h = v + (y - (v - vr)) / tau;
  const T s = h >= thr ? T(1) : T(0);
  v = HARD ? s * vr + (T(1) - s) * h : h - s * thr;
  h_out = h;
  return s;
}

// Coefficient of element i of a tile: a row (channels_last) or a scalar (NCHW).
template <typename T, bool CL>
struct Coef {
  const T* row;
  T s;
  inline T operator[](int64_t i) const {
    if constexpr (CL) return row[i];
    else return s;
  }
};

template <typename T, bool CL>
inline Coef<T, CL> coef(const std::vector<T>& rows, const T* src, const Geo& g, int64_t k,
                        int64_t c) {
  if constexpr (CL) return {rows.data() + k * width(g), T(0)};
  else return {nullptr, src[k * g.C + c]};
}

template <typename T>
inline void load_v(T* vt, const T* v0, T v0s, int64_t off, int64_t n) {
  if (v0) {
    std::memcpy(vt, v0 + off, sizeof(T) * n);
  } else {
    for (int64_t i = 0; i < n; ++i) vt[i] = v0s;
  }
}

// Fold per-position accumulators [K][width] into per-channel sums [K][C] (channels_last).
inline void fold(const std::vector<double>& acc, double* s, const Geo& g) {
  int64_t w = width(g), used = (w / g.C) * g.C;
  for (int64_t k = 0; k < g.K; ++k)
    for (int64_t i = 0; i < used; ++i) s[k * g.C + i % g.C] += acc[k * w + i];
}

// ---------------------------------------------------------------------------------- stats
// Per (step, channel) sums of (x - ref) and (x - ref)^2 in double (ref: a value of that step
// and channel, for a well-conditioned one-pass variance).
template <typename T, bool CL>
void stats_t(const T* x, const T* ref, double* s1, double* s2, Geo g, int64_t u0, int64_t u1) {
  std::memset(s1, 0, sizeof(double) * g.K * g.C);
  std::memset(s2, 0, sizeof(double) * g.K * g.C);
  std::vector<T> rr = CL ? expand(ref, g) : std::vector<T>();
  std::vector<double> a1(CL ? g.K * width(g) : 0), a2(CL ? g.K * width(g) : 0);
  // step-major: one sequential stream at a time, the step's accumulators stay in L1
  for (int64_t k = 0; k < g.K; ++k) {
    for_tiles(g, u0, u1, [&](int64_t off, int64_t n, int64_t c) {
      const T* xk = x + k * g.M + off;
      prefetch_next(xk, n);
      auto r = coef<T, CL>(rr, ref, g, k, c);
      if constexpr (CL) {
        double* p1 = a1.data() + k * width(g);
        double* p2 = a2.data() + k * width(g);
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) {
          double d = double(xk[i]) - double(r[i]);
          p1[i] += d;
          p2[i] += d * d;
        }
      } else {
        double acc1 = 0, acc2 = 0;
#pragma omp simd reduction(+ : acc1, acc2)
        for (int64_t i = 0; i < n; ++i) {
          double d = double(xk[i]) - double(r[i]);
          acc1 += d;
          acc2 += d * d;
        }
        s1[k * g.C + c] += acc1;
        s2[k * g.C + c] += acc2;
      }
    });
  }
  if constexpr (CL) {
    fold(a1, s1, g);
    fold(a2, s2, g);
  }
}

// ---------------------------------------------------------------------------------- forward
// y = x * scale[k, c] + shift[k, c] (or y = x without scale), then LIF; writes the spikes (or
// y when p.lif == 0) to out and the final membrane to v_out (initial: v0, or v0s everywhere).
// Residual modes (a residual of x's shape and layout, LIF only): RES_AFTER out = spike + res
// (the SEW ADD combine), RES_BEFORE the neuron's input is y + res (Spiking-ResNet's
// LIF(branch + shortcut); inference only).
constexpr int RES_NONE = 0, RES_AFTER = 1, RES_BEFORE = 2;

template <typename T, bool CL, bool HARD, int RES>
void fwd_t(const T* x, const T* scale, const T* shift, const T* v0, T v0s, T* v_out, T* out,
           const T* res, Geo g, Lif p, int64_t u0, int64_t u1) {
  const T tau = T(p.tau), thr = T(p.thr), vr = T(p.vr);
  std::vector<T> es = CL ? expand(scale, g) : std::vector<T>();
  std::vector<T> eh = CL ? expand(shift, g) : std::vector<T>();
  for_tiles(g, u0, u1, [&](int64_t off, int64_t n, int64_t c) {
    T vt[TILE > 0 ? TILE : 1];
    T* v = vt;
    std::vector<T> big;
    if (n > TILE) {  // a channels_last pixel wider than a tile
      big.resize(n);
      v = big.data();
    }
    if (p.lif) load_v(v, v0, v0s, off, n);
    for (int64_t k = 0; k < g.K; ++k) {
      const T* xk = x + k * g.M + off;
      T* ok = out + k * g.M + off;
      const T* rk = RES ? res + k * g.M + off : nullptr;
      prefetch_next(xk, n);
      if constexpr (RES != RES_NONE) prefetch_next(rk, n);
      if (!scale) {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) {
          T h;
          const T y = RES == RES_BEFORE ? xk[i] + rk[i] : xk[i];
          const T s = lif_step<T, HARD>(v[i], y, tau, thr, vr, h);
          if constexpr (RES == RES_AFTER) ok[i] = s + rk[i];
          else ok[i] = s;
        }
        continue;
      }
      auto a = coef<T, CL>(es, scale, g, k, c);
      auto b = coef<T, CL>(eh, shift, g, k, c);
      if (!p.lif) {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) ok[i] = xk[i] * a[i] + b[i];
        continue;
      }
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        T y = xk[i] * a[i] + b[i];
        if constexpr (RES == RES_BEFORE) y = y + rk[i];
        T h;
        const T s = lif_step<T, HARD>(v[i], y, tau, thr, vr, h);
        if constexpr (RES == RES_AFTER) ok[i] = s + rk[i];
        else ok[i] = s;
      }
    }
    if (p.lif) std::memcpy(v_out + off, v, sizeof(T) * n);
  });
}

// ---------------------------------------------------------------------------------- backward
template <typename T, int SG>
inline T surrogate(T x, T a) {
  if constexpr (SG == 0) {
    T s = T(1) / (T(1) + std::exp(-a * x));
    return (T(1) - s) * s * a;
  } else if constexpr (SG == 1) {
    T z = x * (T(M_PI / 2) * a);
    return (a / T(2)) / (T(1) + z * z);
  } else if constexpr (SG == 2) {
    T r = T(1) - std::fabs(x) / a;
    return (r > T(0) ? r : T(0)) / a;
  } else {
    T z = T(1) + a * std::fabs(x);
    return T(1) / (z * z);
  }
}

// Backward of fwd. gs: gradient of the outputs; gvk: gradient of the final membrane (or null).
// Writes gy (gradient of y; may alias gs) and gv0 (if not null); when s1 is set, accumulates
// per (k, c) sum(gy) into s1 and sum(gy * (x - mean)) into s2 (BatchNorm). The membranes are
// recomputed tile by tile from x and v0 (the forward stores nothing).
template <typename T, bool CL, int SG, bool HARD, bool DETACH>
void bwd_t(const T* x, const T* scale, const T* shift, const T* v0, T v0s, const T* gs,
           const T* gvk, T* gy, T* gv0, const T* mean, double* s1, double* s2, Geo g, Lif p,
           int64_t u0, int64_t u1) {
  const T tau = T(p.tau), thr = T(p.thr), vr = T(p.vr), al = T(p.alpha);
  const bool sums = s1 != nullptr;
  if (sums) {
    std::memset(s1, 0, sizeof(double) * g.K * g.C);
    std::memset(s2, 0, sizeof(double) * g.K * g.C);
  }
  const int64_t w = width(g);
  std::vector<T> es = CL ? expand(scale, g) : std::vector<T>();
  std::vector<T> eh = CL ? expand(shift, g) : std::vector<T>();
  std::vector<T> em = CL && sums ? expand(mean, g) : std::vector<T>();
  std::vector<double> a1(CL && sums ? g.K * w : 0), a2(CL && sums ? g.K * w : 0);
  std::vector<T> hb(g.K * w), carry(w);
  for_tiles(g, u0, u1, [&](int64_t off, int64_t n, int64_t c) {
    T* cr = carry.data();
    if (p.lif) {
      T* v = cr;  // the membrane tile first, then the carried gradient
      load_v(v, v0, v0s, off, n);
      for (int64_t k = 0; k < g.K; ++k) {  // recompute h
        const T* xk = x + k * g.M + off;
        T* hk = hb.data() + k * w;
        prefetch_next(xk, n);
        if (!scale) {
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) {
            lif_step<T, HARD>(v[i], xk[i], tau, thr, vr, hk[i]);
          }
          continue;
        }
        auto a = coef<T, CL>(es, scale, g, k, c);
        auto b = coef<T, CL>(eh, shift, g, k, c);
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) {
          lif_step<T, HARD>(v[i], xk[i] * a[i] + b[i], tau, thr, vr, hk[i]);
        }
      }
      for (int64_t i = 0; i < n; ++i) cr[i] = gvk ? gvk[off + i] : T(0);
    }
    for (int64_t k = g.K - 1; k >= 0; --k) {
      const T* gk = gs + k * g.M + off;
      T* gyk = gy + k * g.M + off;
      prefetch_next(gk, n);
      if (p.lif) {
        const T* hk = hb.data() + k * w;
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) {
          T h = hk[i];
          T sg = surrogate<T, SG>(h - thr, al);
          T rg;
          if constexpr (!HARD) {
            rg = DETACH ? T(1) : T(1) - thr * sg;
          } else {
            rg = T(1) - (h >= thr ? T(1) : T(0));
            if constexpr (!DETACH) rg = rg + (vr - h) * sg;
          }
          T gh = gk[i] * sg + cr[i] * rg;
          gyk[i] = gh / tau;
          cr[i] = gh - gh / tau;
        }
      } else if (gyk != gk) {
        std::memcpy(gyk, gk, sizeof(T) * n);
      }
      if (!sums) continue;
      const T* xk = x + k * g.M + off;
      auto m = coef<T, CL>(em, mean, g, k, c);
      if constexpr (CL) {
        double* p1 = a1.data() + k * w;
        double* p2 = a2.data() + k * w;
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) {
          double gv = double(gyk[i]);
          p1[i] += gv;
          p2[i] += gv * (double(xk[i]) - double(m[i]));
        }
      } else {
        double acc1 = 0, acc2 = 0;
#pragma omp simd reduction(+ : acc1, acc2)
        for (int64_t i = 0; i < n; ++i) {
          double gv = double(gyk[i]);
          acc1 += gv;
          acc2 += gv * (double(xk[i]) - double(m[i]));
        }
        s1[k * g.C + c] += acc1;
        s2[k * g.C + c] += acc2;
      }
    }
    if (p.lif && gv0) std::memcpy(gv0 + off, cr, sizeof(T) * n);
  });
  if constexpr (CL) {
    if (sums) {
      fold(a1, s1, g);
      fold(a2, s2, g);
    }
  }
}

// dx = A[k, c] * gy + B[k, c] * x + D[k, c], in place into gy (BatchNorm input gradient).
template <typename T, bool CL>
void affine3_t(T* gy, const T* x, const T* A, const T* B, const T* D, Geo g, int64_t u0,
               int64_t u1) {
  std::vector<T> ea = CL ? expand(A, g) : std::vector<T>();
  std::vector<T> eb = CL ? expand(B, g) : std::vector<T>();
  std::vector<T> ed = CL ? expand(D, g) : std::vector<T>();
  for (int64_t k = 0; k < g.K; ++k) {  // step-major: two sequential streams
    for_tiles(g, u0, u1, [&](int64_t off, int64_t n, int64_t c) {
      T* gk = gy + k * g.M + off;
      const T* xk = x + k * g.M + off;
      auto a = coef<T, CL>(ea, A, g, k, c);
      auto b = coef<T, CL>(eb, B, g, k, c);
      auto d = coef<T, CL>(ed, D, g, k, c);
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) gk[i] = a[i] * gk[i] + b[i] * xk[i] + d[i];
    });
  }
}

// ---------------------------------------------------------------------------------- conv + LIF
// Inference of a stem layer: conv3x3 (stride 1, padding 1, no bias) of a few-channel input, a
// per-channel affine (BatchNorm folded from its running statistics), then LIF, in one pass: the
// convolution's output never goes to memory. The input is read through its strides (any
// layout), frame n = k * B + b. wt holds the weights tap-major, [Cin * 9][C]. Units are the
// output rows (b, h); a row's membranes stay in cache across the K steps. Spikes and the final
// membranes are written channels_last (CL) or NCHW.
template <typename T, int CT, int CINT, bool CL, bool HARD>
void conv_lif_t(const T* x, int64_t sn, int64_t sc, int64_t sh, int64_t sw, const T* wt,
                const T* scale, const T* shift, const T* v0, T v0s, T* v_out, T* out,
                int64_t K, int64_t B, int64_t Cin_rt, int64_t C_rt, int64_t H, int64_t W, Lif p,
                int64_t u0, int64_t u1) {
  const int64_t C = CT > 0 ? CT : C_rt;
  const int64_t Cin = CINT > 0 ? CINT : Cin_rt;  // compile-time sizes: fully unrolled taps
  const T tau = T(p.tau), thr = T(p.thr), vr = T(p.vr);
  const int64_t PW = W + 2;
  // 16 float spikes = one aligned 64-byte line per pixel (channels_last, 64-byte aligned output)
  constexpr bool STREAM = isa::can_stream && CL && CT == 16 && sizeof(T) == 4;
  const bool aligned = reinterpret_cast<uintptr_t>(out) % 64 == 0;
  if (STREAM && !aligned) {
    conv_lif_t<T, 0, 0, CL, HARD>(x, sn, sc, sh, sw, wt, scale, shift, v0, v0s, v_out, out, K,
                                 B, Cin_rt, C_rt, H, W, p, u0, u1);
    return;
  }
  std::vector<T> pad(Cin * 3 * PW), vrow(W * C), acc_v(C);
  std::vector<uint8_t> live(PW);
  auto at = [&](int64_t n, int64_t c, int64_t h, int64_t w) -> int64_t {
    return CL ? ((n * H + h) * W + w) * C + c : ((n * C + c) * H + h) * W + w;
  };
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t b = u / H, h = u % H;
    for (int64_t w = 0; w < W; ++w)
      for (int64_t c = 0; c < C; ++c) vrow[w * C + c] = v0 ? v0[at(b, c, h, w)] : v0s;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t n = k * B + b;
      for (int64_t ci = 0; ci < Cin; ++ci) {
        for (int64_t r = 0; r < 3; ++r) {
          T* row = pad.data() + (ci * 3 + r) * PW;
          const int64_t hh = h + r - 1;
          row[0] = row[W + 1] = T(0);
          if (hh < 0 || hh >= H) {
            for (int64_t w = 1; w <= W; ++w) row[w] = T(0);
            continue;
          }
          const T* src = x + n * sn + ci * sc + hh * sh;
          for (int64_t w = 0; w < W; ++w) row[w + 1] = src[w * sw];
        }
      }
      // padded columns with a nonzero input (any channel, any of the 3 rows): event frames
      // are sparse, and a pixel whose 3 x 3 neighbourhood is zero has the sum +0 without taps
      for (int64_t w = 0; w < PW; ++w) {
        bool any = false;
        for (int64_t j = 0; j < Cin * 3; ++j) any |= pad[j * PW + w] != T(0);
        live[w] = any;
      }
      for (int64_t w = 0; w < W; ++w) {
        T acc[CT > 0 ? CT : 1];
        T* a = CT > 0 ? acc : acc_v.data();
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) a[c] = T(0);
        if (live[w] | live[w + 1] | live[w + 2])
        for (int64_t ci = 0; ci < Cin; ++ci) {
          for (int64_t r = 0; r < 3; ++r) {
            const T* row = pad.data() + (ci * 3 + r) * PW + w;
            for (int64_t d = 0; d < 3; ++d) {
              const T xv = row[d];
              const T* wr = wt + ((ci * 3 + r) * 3 + d) * C;
#pragma omp simd
              for (int64_t c = 0; c < C; ++c) a[c] = isa::fmadd(wr[c], xv, a[c]);
            }
          }
        }
        T* v = vrow.data() + w * C;
        if constexpr (CL) {
          T* o = out + at(n, 0, h, w);
          T sp[CT > 0 ? CT : 1];
          T* so = STREAM ? sp : o;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            T hv;
            so[c] = lif_step<T, HARD>(v[c], a[c] * scale[c] + shift[c], tau, thr, vr, hv);
          }
          // the spikes bypass the cache (no read-for-ownership of lines written in full)
          if constexpr (STREAM) isa::stream_line(reinterpret_cast<float*>(o),
                                                 reinterpret_cast<const float*>(sp));
        } else {
          for (int64_t c = 0; c < C; ++c) {
            T hv;
            out[at(n, c, h, w)] = lif_step<T, HARD>(v[c], a[c] * scale[c] + shift[c], tau, thr,
                                                    vr, hv);
          }
        }
      }
    }
    for (int64_t w = 0; w < W; ++w)
      for (int64_t c = 0; c < C; ++c) v_out[at(b, c, h, w)] = vrow[w * C + c];
  }
  if constexpr (STREAM) isa::fence();
}

template <typename T, int CT, int CINT>
void conv_lif_c(const T* x, int64_t sn, int64_t sc, int64_t sh, int64_t sw, const T* wt,
                const T* scale, const T* shift, const T* v0, T v0s, T* v_out, T* out, int64_t K,
                int64_t B, int64_t Cin, int64_t C, int64_t H, int64_t W, int cl, Lif p,
                int64_t u0, int64_t u1) {
#define SNN_CONV(CLV, HV)                                                                        \
  conv_lif_t<T, CT, CINT, CLV, HV>(x, sn, sc, sh, sw, wt, scale, shift, v0, v0s, v_out, out, K,  \
                                   B, Cin, C, H, W, p, u0, u1)
  if (cl && p.hard) SNN_CONV(true, true);
  else if (cl) SNN_CONV(true, false);
  else if (p.hard) SNN_CONV(false, true);
  else SNN_CONV(false, false);
#undef SNN_CONV
}

// ---------------------------------------------------------------------------------- spike conv
// Inference convolution of a binary (spike) input by table lookup. With x in {0, 1}, a pixel's
// contribution through tap t is the sum of the weight vectors w[t][c][:] over its active
// channels c. Channels are taken in groups of 8 and tab[t][g][m][:] holds, for each 8-bit
// pattern m, the sum of group g's weight vectors of tap t (built by the caller), so an output
// pixel costs taps * groups vector additions (9 * 2 for a 3x3 conv of 16 channels) instead of
// taps * Cin multiply-adds, whatever the spike density (silent groups add table entry 0: no
// branches); an output whose whole receptive field is silent is written as zeros without
// lookups (sparse maps, e.g. one window at a time in inference). The input is read through its strides (as bit masks, see MaskRows); the output
// is channels_last [N, Ho, Wo, C]. Units are output rows (n, oy). An input value other than 0
// or 1 (or NaN) sets *bad: the caller then runs a dense convolution.
template <typename T>
inline bool row_masks(const T* row, int64_t sc, int64_t sw, int64_t Cin, int64_t W, int64_t G,
                      uint8_t* m) {
  bool bad = false;
  if (sc == 1) {  // channels_last: a vector of channels per compare (isa::nonzero_bits)
    constexpr int L = isa::lanes<T>();
    for (int64_t ix = 0; ix < W; ++ix) {
      const T* px = row + ix * sw;
      uint8_t* mp = m + ix * G;
      uint64_t bits = 0;  // pending mask bits, lowest first
      int have = 0;
      for (int64_t c = 0; c < Cin; c += L) {
        const int n = Cin - c < L ? int(Cin - c) : L;
        bits |= uint64_t(isa::nonzero_bits(px + c, n, bad)) << have;
        have += n;
        for (; have >= 8; have -= 8, bits >>= 8) *mp++ = uint8_t(bits);
      }
      if (have > 0) *mp = uint8_t(bits);  // a partial last group
    }
    return bad;
  }
  for (int64_t ix = 0; ix < W; ++ix) {  // other layouts: channel by channel through the strides
    const T* px = row + ix * sw;
    for (int64_t g = 0; g < G; ++g) {
      unsigned bits = 0;
      for (int64_t j = 0; j < 8 && g * 8 + j < Cin; ++j) {
        const T v = px[(g * 8 + j) * sc];
        bits |= unsigned(v != T(0)) << j;
        bad |= (v != T(0)) && (v != T(1));
      }
      m[ix * G + g] = uint8_t(bits);
    }
  }
  return bad;
}

// The bit masks of the k input rows an output row reads, in k slots (row iy in slot iy % k, so
// a run of output rows scans each input row once), each with `pad` zero columns on both sides
// (entry 0 of every table is 0: the tap loops need no bounds checks); out-of-range rows read a
// zero row. A 1x1 conv reads every s-th column only (cs = s).
template <typename T>
struct MaskRows {
  const T* x;
  int64_t sn, sc, sh, sw, Cin, H, W, k, s, pad, G, cs, Wm, Wp;
  std::vector<uint8_t> masks;
  std::vector<int64_t> held;  // the row a slot holds, as n * H + iy
  const uint8_t* rows[8];     // k <= 7 (checked by the caller)

  MaskRows(const T* x_, int64_t sn_, int64_t sc_, int64_t sh_, int64_t sw_, int64_t Cin_,
           int64_t H_, int64_t W_, int64_t k_, int64_t s_, int64_t pad_, int64_t G_)
      : x(x_), sn(sn_), sc(sc_), sh(sh_), sw(sw_), Cin(Cin_), H(H_), W(W_), k(k_), s(s_),
        pad(pad_), G(G_), cs(k_ == 1 ? s_ : 1), Wm((W_ + cs - 1) / cs), Wp(Wm + 2 * pad_),
        masks((k_ + 1) * Wp * G_, 0), held(k_, -1) {}

  // Points rows[0..k) at output row (n, oy)'s input rows; true if a new row held a non-spike.
  bool load(int64_t n, int64_t oy) {
    bool bad = false;
    for (int64_t r = 0; r < k; ++r) {
      const int64_t iy = oy * s + r - pad;
      if (iy < 0 || iy >= H) {
        rows[r] = masks.data() + k * Wp * G;  // the zero row
        continue;
      }
      const int64_t slot = iy % k;
      uint8_t* mr = masks.data() + slot * Wp * G;
      rows[r] = mr;
      if (held[slot] != n * H + iy) {
        bad |= row_masks<T>(x + n * sn + iy * sh, sc, sw * cs, Cin, Wm, G, mr + pad * G);
        held[slot] = n * H + iy;
      }
    }
    return bad;
  }

  // Mask entries between output columns.
  int64_t step() const { return (k == 1 ? 1 : s) * G; }

  // Plans prefetches of the new input rows of output row (n, oy + 1), spread over `parts`
  // calls of prefetch(part) while row oy is summed (channels_last rows are contiguous runs that
  // the hardware prefetcher picks up late).
  const char* pf = nullptr;
  int64_t pf_lines = 0, pf_per = 0;
  void plan_prefetch(int64_t n, int64_t oy, int64_t parts) {
    pf_lines = 0;
    const int64_t first = std::max<int64_t>(oy * s + k - pad, 0);
    const int64_t last = std::min<int64_t>((oy + 1) * s + k - 1 - pad, H - 1);
    if (sc != 1 || last < first) return;
    pf = reinterpret_cast<const char*>(x + n * sn + first * sh);
    pf_lines = ((last - first) * sh + W * sw) * int64_t(sizeof(T)) / 64;
    pf_per = (pf_lines + parts - 1) / parts;
  }
  void prefetch(int64_t part) const {
    const int64_t end = std::min(pf_lines, (part + 1) * pf_per);
    for (int64_t i = part * pf_per; i < end; ++i) __builtin_prefetch(pf + i * 64);
  }
};

template <typename T, int CT, int KT, int GT>
void spike_conv_t(const T* x, int64_t sn, int64_t sc, int64_t sh, int64_t sw, const T* tab,
                  T* out, int64_t Cin, int64_t C_rt, int64_t H, int64_t W, int64_t k_rt,
                  int64_t s, int64_t pad, int64_t Ho, int64_t Wo, int* bad, int64_t u0,
                  int64_t u1) {
  // compile-time sizes (CT channels, KT x KT taps, GT groups): the sums stay in registers
  const int64_t C = CT > 0 ? CT : C_rt;
  const int64_t k = KT > 0 ? KT : k_rt;
  const int64_t G = GT > 0 ? GT : (Cin + 7) / 8;
  MaskRows<T> mrows(x, sn, sc, sh, sw, Cin, H, W, k, s, pad, G);
  std::vector<T> acc_v(CT > 0 ? 1 : k * C);
  const int64_t step = mrows.step();
  const int64_t tap_stride = G * 256 * C;
  bool nonbinary = false;
  for (int64_t u = u0; u < u1; ++u) {
    if (nonbinary || __atomic_load_n(bad, __ATOMIC_RELAXED)) break;  // the result is dropped
    const int64_t n = u / Ho, oy = u % Ho;
    nonbinary |= mrows.load(n, oy);
    const uint8_t* rows[8];  // a local copy the compiler can keep in registers
    std::copy(mrows.rows, mrows.rows + k, rows);
    if (u + 1 < u1 && (u + 1) % Ho != 0) mrows.plan_prefetch(n, oy, Wo);
    else mrows.pf_lines = 0;
    T* orow = out + u * Wo * C;
    for (int64_t ox = 0; ox < Wo; ++ox) {
      mrows.prefetch(ox);
      T* o = orow + ox * C;
      if constexpr (CT > 0 && KT > 0 && GT > 0) {
        unsigned any = 0;  // a receptive field without spikes sums table entries 0: zeros
        for (int r = 0; r < KT; ++r)
          for (int j = 0; j < KT * GT; ++j) any |= rows[r][ox * step + j];
        if (!any) {
#pragma omp simd
          for (int c = 0; c < CT; ++c) o[c] = T(0);
          continue;
        }
        T acc[KT][CT];  // one sum per tap row: parallel add chains
        for (int r = 0; r < KT; ++r) {
          const uint8_t* mr = rows[r] + ox * step;
          const T* e[KT * GT];
          for (int d = 0; d < KT; ++d)
            for (int g = 0; g < GT; ++g)
              e[d * GT + g] = tab + (r * KT + d) * tap_stride + (g * 256 + mr[d * GT + g]) * CT;
#pragma omp simd
          for (int c = 0; c < CT; ++c) {
            T sum = e[0][c];
            for (int j = 1; j < KT * GT; ++j) sum += e[j][c];
            acc[r][c] = sum;
          }
        }
#pragma omp simd
        for (int c = 0; c < CT; ++c) {
          T sum = acc[0][c];
          for (int r = 1; r < KT; ++r) sum += acc[r][c];
          o[c] = sum;
        }
      } else {
        T* a = acc_v.data();
        for (int64_t r = 0; r < k; ++r) {
          T* ar = a + r * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) ar[c] = T(0);
          const uint8_t* mr = rows[r] + ox * step;
          for (int64_t d = 0; d < k; ++d)
            for (int64_t g = 0; g < G; ++g) {
              const T* e = tab + (r * k + d) * tap_stride + (g * 256 + mr[d * G + g]) * C;
#pragma omp simd
              for (int64_t c = 0; c < C; ++c) ar[c] += e[c];
            }
        }
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) o[c] = a[c];
        for (int64_t r = 1; r < k; ++r)
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) o[c] += a[r * C + c];
      }
    }
  }
  if (nonbinary) __atomic_store_n(bad, 1, __ATOMIC_RELAXED);
}

template <typename T, int CT, int GT>
void spike_conv_k(const T* x, int64_t sn, int64_t sc, int64_t sh, int64_t sw, const T* tab,
                  T* out, int64_t Cin, int64_t C, int64_t H, int64_t W, int64_t k, int64_t s,
                  int64_t pad, int64_t Ho, int64_t Wo, int* bad, int64_t u0, int64_t u1) {
#define SNN_SPIKE_CONV(CT_, KT_, GT_)                                                             \
  spike_conv_t<T, CT_, KT_, GT_>(x, sn, sc, sh, sw, tab, out, Cin, C, H, W, k, s, pad, Ho, Wo,   \
                                 bad, u0, u1)
  if (C == CT && (Cin + 7) / 8 == GT && k == 3) SNN_SPIKE_CONV(CT, 3, GT);
  else SNN_SPIKE_CONV(0, 0, 0);  // other sizes (1x1 convs are left to oneDNN by the caller)
#undef SNN_SPIKE_CONV
}

// ---------------------------------------------------------------------------------- LIF + pool
// Inference, channels_last: y = x * scale[c] + shift[c] (or x without scale), LIF, out =
// spikes (+ res, the SEW ADD), then MaxPool2d(2) (stride 2, floor) written instead of the
// full-size output. Units are pairs of input rows (b, p): rows 2p and 2p + 1 (an odd last row
// and column update their membranes but fall out of the pool, as in floor mode). Arithmetic as
// fwd_t, and max is exact: the result equals fwd_t followed by the pool.
template <typename T, bool HARD, int RES>
void fwd_pool_t(const T* x, const T* scale, const T* shift, const T* v0, T v0s, T* v_out,
                T* out, const T* res, int64_t K, int64_t B, int64_t C, int64_t H, int64_t W,
                Lif p, int64_t u0, int64_t u1) {
  const T tau = T(p.tau), thr = T(p.thr), vr = T(p.vr);
  const int64_t P = (H + 1) / 2, Ho = H / 2, Wo = W / 2, row = W * C;
  std::vector<T> val(2 * row), es(scale ? 2 * row : 0), eh(scale ? 2 * row : 0);
  for (int64_t i = 0; i < int64_t(es.size()); ++i) {  // the channel pattern of a row pair
    es[i] = scale[i % C];
    eh[i] = shift[i % C];
  }
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t b = u / P, pr = u % P;
    const int64_t h0 = 2 * pr, rows = (h0 + 1 < H) ? 2 : 1;
    T* v = v_out + (b * H + h0) * row;  // the pair's membranes, contiguous in channels_last
    const int64_t nv = rows * row;
    if (v0) std::memcpy(v, v0 + (b * H + h0) * row, sizeof(T) * nv);
    else for (int64_t i = 0; i < nv; ++i) v[i] = v0s;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t base = ((k * B + b) * H + h0) * row;
      const T* xk = x + base;
      const T* rk = RES ? res + base : nullptr;
      const T* a = scale ? es.data() : nullptr;
      const T* bsh = scale ? eh.data() : nullptr;
#pragma omp simd
      for (int64_t i = 0; i < nv; ++i) {
        T y = a ? xk[i] * a[i] + bsh[i] : xk[i];
        if constexpr (RES == RES_BEFORE) y = y + rk[i];
        T h;
        const T s = lif_step<T, HARD>(v[i], y, tau, thr, vr, h);
        if constexpr (RES == RES_AFTER) val[i] = s + rk[i];
        else val[i] = s;
      }
      if (rows < 2 || pr >= Ho) continue;
      T* o = out + ((k * B + b) * Ho + pr) * Wo * C;
      for (int64_t wo = 0; wo < Wo; ++wo) {
        const T* a = val.data() + 2 * wo * C;
        const T* c2 = a + row;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          T m = a[c] > a[c + C] ? a[c] : a[c + C];
          T m2 = c2[c] > c2[c + C] ? c2[c] : c2[c + C];
          o[wo * C + c] = m > m2 ? m : m2;
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------- strided 1x1
// A 1x1 convolution of stride s > 1 (no padding, no bias: the blocks' downsampling shortcut),
// forward and gradients. The forward out[n, oy, ox, :] = W x[n, s oy, s ox, :] reads every s-th
// pixel of every s-th row only; the input gradient is W^T g at those pixels and zero elsewhere,
// written in one pass over gx. About as fast as oneDNN (fwd / input / weight gradient 12 / 16 /
// 12 ms vs 10 / 19 / 11 ms at the reference's 40 x 16 x 260 x 346, AVX2), but correct: with a
// channels_last input of a channel count that is no multiple of its vector width, oneDNN's
// backward of this conv gives wrong weight gradients (AVX2) or corrupts the heap (AVX-512),
// PyTorch 2.13. Input x and gradient gx go
// through their strides (any layout); out and g are channels_last [N, Ho, Wo, C]. wt is
// [Cin][C] (forward) or [C][Cin] (input gradient). Units: output rows n * Ho + oy (forward,
// weight gradient), input rows n * H + y (input gradient).
template <typename T, int CT, int CINT>
void pw_fwd_t(const T* x, int64_t sn, int64_t sc, int64_t sh, int64_t sw, const T* wt, T* out,
              int64_t Cin_rt, int64_t C_rt, int64_t s, int64_t Ho, int64_t Wo, int64_t u0,
              int64_t u1) {
  const int64_t C = CT > 0 ? CT : C_rt, Cin = CINT > 0 ? CINT : Cin_rt;
  std::vector<T> acc_v(C);
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t n = u / Ho, oy = u % Ho;
    const T* row = x + n * sn + oy * s * sh;
    T* orow = out + u * Wo * C;
    for (int64_t ox = 0; ox < Wo; ++ox) {
      const T* px = row + ox * s * sw;
      T acc[CT > 0 ? CT : 1];
      T* a = CT > 0 ? acc : acc_v.data();
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) a[c] = T(0);
      for (int64_t ci = 0; ci < Cin; ++ci) {
        const T xv = px[ci * sc];
        const T* wr = wt + ci * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) a[c] = isa::fmadd(wr[c], xv, a[c]);
      }
      T* o = orow + ox * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) o[c] = a[c];
    }
  }
}

template <typename T, int CT, int CINT>
void pw_grad_t(const T* g, const T* wt, T* gx, int64_t sn, int64_t sc, int64_t sh, int64_t sw,
               int64_t Cin_rt, int64_t C_rt, int64_t H, int64_t W, int64_t s, int64_t Ho,
               int64_t Wo, int64_t u0, int64_t u1) {
  const int64_t C = CT > 0 ? CT : C_rt, Cin = CINT > 0 ? CINT : Cin_rt;
  std::vector<T> acc_v(Cin);
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t n = u / H, y = u % H;
    T* row = gx + n * sn + y * sh;
    const bool hit = y % s == 0 && y / s < Ho;
    const T* grow = g + (n * Ho + y / s) * Wo * C;
    if (!hit && sc == 1 && sw == Cin) {  // channels_last: a row of zeros
      std::memset(row, 0, sizeof(T) * W * Cin);
      continue;
    }
    for (int64_t xw = 0; xw < W; ++xw) {
      T* px = row + xw * sw;
      if (!hit || xw % s != 0 || xw / s >= Wo) {
        for (int64_t ci = 0; ci < Cin; ++ci) px[ci * sc] = T(0);
        continue;
      }
      const T* gp = grow + (xw / s) * C;
      T acc[CINT > 0 ? CINT : 1];
      T* a = CINT > 0 ? acc : acc_v.data();
#pragma omp simd
      for (int64_t ci = 0; ci < Cin; ++ci) a[ci] = T(0);
      for (int64_t c = 0; c < C; ++c) {
        const T gv = gp[c];
        const T* wr = wt + c * Cin;
#pragma omp simd
        for (int64_t ci = 0; ci < Cin; ++ci) a[ci] = isa::fmadd(wr[ci], gv, a[ci]);
      }
      for (int64_t ci = 0; ci < Cin; ++ci) px[ci * sc] = a[ci];
    }
  }
}

// Weight gradient: gw[ci][c] += sum over output pixels of x[n, s oy, s ox, ci] * g[n, oy, ox, c]
// (accumulated in double per output row, into this part's gw [Cin][C], zeroed here). Units:
// output rows n * Ho + oy.
template <typename T, int CT, int CINT>
void pw_wgrad_t(const T* x, int64_t sn, int64_t sc, int64_t sh, int64_t sw, const T* g,
                double* gw, int64_t Cin_rt, int64_t C_rt, int64_t s, int64_t Ho, int64_t Wo,
                int64_t u0, int64_t u1) {
  const int64_t C = CT > 0 ? CT : C_rt, Cin = CINT > 0 ? CINT : Cin_rt;
  std::memset(gw, 0, sizeof(double) * Cin * C);
  std::vector<T> acc(Cin * C);
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t n = u / Ho, oy = u % Ho;
    const T* row = x + n * sn + oy * s * sh;
    const T* grow = g + u * Wo * C;
    std::fill(acc.begin(), acc.end(), T(0));
    for (int64_t ox = 0; ox < Wo; ++ox) {
      const T* px = row + ox * s * sw;
      const T* gp = grow + ox * C;
      for (int64_t ci = 0; ci < Cin; ++ci) {
        const T xv = px[ci * sc];
        T* a = acc.data() + ci * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) a[c] = isa::fmadd(xv, gp[c], a[c]);
      }
    }
    for (int64_t i = 0; i < Cin * C; ++i) gw[i] += double(acc[i]);
  }
}

// ---------------------------------------------------------------------------------- threads
// Runs body(part, u0, u1) for `parts` equal unit ranges on OpenMP threads. The library links
// libgomp.so.1 by soname, which resolves to the copy PyTorch has loaded: the kernels run on the
// same worker threads as PyTorch's own ops (oneDNN's convolutions), which would otherwise keep
// spinning on the cores after each op and slow separate kernel threads down.
template <typename F>
void parallel_parts(int64_t units, int parts, F&& body) {
  if (parts <= 1) {
    body(0, int64_t(0), units);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel num_threads(parts)
  {
    const int n = omp_get_num_threads();
    for (int p = omp_get_thread_num(); p < parts; p += n)  // all parts, even with fewer threads
      body(p, units * p / parts, units * (p + 1) / parts);
  }
#else  // built without OpenMP (a compiler without it): one thread
  for (int p = 0; p < parts; ++p) body(p, units * p / parts, units * (p + 1) / parts);
#endif
}

// ---------------------------------------------------------------------------------- dispatch
template <typename T, bool CL, int SG>
void bwd_sg(const T* x, const T* sc, const T* sh, const T* v0, T v0s, const T* gs, const T* gvk,
            T* gy, T* gv0, const T* mean, double* s1, double* s2, Geo g, Lif p, int64_t u0,
            int64_t u1) {
#define SNN_BWD(H, D) \
  bwd_t<T, CL, SG, H, D>(x, sc, sh, v0, v0s, gs, gvk, gy, gv0, mean, s1, s2, g, p, u0, u1)
  if (p.hard) {
    if (p.detach_reset) SNN_BWD(true, true);
    else SNN_BWD(true, false);
  } else {
    if (p.detach_reset) SNN_BWD(false, true);
    else SNN_BWD(false, false);
  }
#undef SNN_BWD
}

template <typename T, bool CL>
void bwd_cl(const T* x, const T* sc, const T* sh, const T* v0, T v0s, const T* gs, const T* gvk,
            T* gy, T* gv0, const T* mean, double* s1, double* s2, Geo g, Lif p, int64_t u0,
            int64_t u1) {
#define SNN_SG(S) bwd_sg<T, CL, S>(x, sc, sh, v0, v0s, gs, gvk, gy, gv0, mean, s1, s2, g, p, u0, u1)
  switch (p.sg_id) {
    case 0: SNN_SG(0); break;
    case 1: SNN_SG(1); break;
    case 2: SNN_SG(2); break;
    default: SNN_SG(3);
  }
#undef SNN_SG
}

template <typename T, int RES>
void fwd_d(const T* x, const T* sc, const T* sh, const T* v0, T v0s, T* v, T* out, const T* res,
           Geo g, Lif p, int64_t u0, int64_t u1) {
  if (g.cl() && p.hard) fwd_t<T, true, true, RES>(x, sc, sh, v0, v0s, v, out, res, g, p, u0, u1);
  else if (g.cl()) fwd_t<T, true, false, RES>(x, sc, sh, v0, v0s, v, out, res, g, p, u0, u1);
  else if (p.hard) fwd_t<T, false, true, RES>(x, sc, sh, v0, v0s, v, out, res, g, p, u0, u1);
  else fwd_t<T, false, false, RES>(x, sc, sh, v0, v0s, v, out, res, g, p, u0, u1);
}

}  // namespace

#define SNN_EXPORT(T, SUF)                                                                       \
  extern "C" void snn_stats_##SUF(const T* x, const T* ref, double* s1, double* s2, int64_t K,  \
                                  int64_t M, int64_t C, int64_t inner, int64_t u0, int64_t u1) { \
    Geo g{K, M, C, inner};                                                                       \
    if (g.cl()) stats_t<T, true>(x, ref, s1, s2, g, u0, u1);                                     \
    else stats_t<T, false>(x, ref, s1, s2, g, u0, u1);                                           \
  }                                                                                              \
  extern "C" void snn_fwd_##SUF(const T* x, const T* sc, const T* sh, const T* v0, double v0s,  \
                                T* v, T* out, const T* res, int64_t K, int64_t M, int64_t C,     \
                                int64_t inner, double tau, double thr, double vr, int hard,      \
                                int lif, int res_before, int64_t u0, int64_t u1) {               \
    Geo g{K, M, C, inner};                                                                       \
    Lif p{tau, thr, vr, hard, 1, 1, 1.0, lif};                                                   \
    if (res && lif && res_before)                                                                \
      fwd_d<T, RES_BEFORE>(x, sc, sh, v0, T(v0s), v, out, res, g, p, u0, u1);                    \
    else if (res && lif)                                                                         \
      fwd_d<T, RES_AFTER>(x, sc, sh, v0, T(v0s), v, out, res, g, p, u0, u1);                     \
    else                                                                                         \
      fwd_d<T, RES_NONE>(x, sc, sh, v0, T(v0s), v, out, nullptr, g, p, u0, u1);                  \
  }                                                                                              \
  extern "C" void snn_bwd_##SUF(const T* x, const T* sc, const T* sh, const T* v0, double v0s,  \
                                const T* gs, const T* gvk, T* gy, T* gv0, const T* mean,         \
                                double* s1, double* s2, int64_t K, int64_t M, int64_t C,         \
                                int64_t inner, double tau, double thr, double vr, int hard,      \
                                int detach_reset, int sg_id, double alpha, int lif, int64_t u0,  \
                                int64_t u1) {                                                    \
    Geo g{K, M, C, inner};                                                                       \
    Lif p{tau, thr, vr, hard, detach_reset, sg_id, alpha, lif};                                  \
    if (g.cl())                                                                                  \
      bwd_cl<T, true>(x, sc, sh, v0, T(v0s), gs, gvk, gy, gv0, mean, s1, s2, g, p, u0, u1);      \
    else                                                                                         \
      bwd_cl<T, false>(x, sc, sh, v0, T(v0s), gs, gvk, gy, gv0, mean, s1, s2, g, p, u0, u1);     \
  }                                                                                              \
  extern "C" void snn_affine3_##SUF(T* gy, const T* x, const T* A, const T* B, const T* D,      \
                                    int64_t K, int64_t M, int64_t C, int64_t inner, int64_t u0,  \
                                    int64_t u1) {                                                \
    Geo g{K, M, C, inner};                                                                       \
    if (g.cl()) affine3_t<T, true>(gy, x, A, B, D, g, u0, u1);                                   \
    else affine3_t<T, false>(gy, x, A, B, D, g, u0, u1);                                         \
  }

// Parallel entry points: units [0, units) in `parts` ranges; the per-part partial sums (stats,
// bwd) go to s1 / s2 + part * K * C.
#define SNN_EXPORT_PAR(T, SUF)                                                                   \
  extern "C" void snn_stats_par_##SUF(const T* x, const T* ref, double* s1, double* s2,         \
                                      int64_t K, int64_t M, int64_t C, int64_t inner,           \
                                      int64_t units, int parts) {                               \
    parallel_parts(units, parts, [&](int p, int64_t u0, int64_t u1) {                           \
      snn_stats_##SUF(x, ref, s1 + p * K * C, s2 + p * K * C, K, M, C, inner, u0, u1);          \
    });                                                                                          \
  }                                                                                              \
  extern "C" void snn_fwd_par_##SUF(const T* x, const T* sc, const T* sh, const T* v0,          \
                                    double v0s, T* v, T* out, const T* res, int64_t K,           \
                                    int64_t M, int64_t C, int64_t inner, double tau, double thr, \
                                    double vr, int hard, int lif, int res_before, int64_t units, \
                                    int parts) {                                                 \
    parallel_parts(units, parts, [&](int, int64_t u0, int64_t u1) {                             \
      snn_fwd_##SUF(x, sc, sh, v0, v0s, v, out, res, K, M, C, inner, tau, thr, vr, hard, lif,   \
                    res_before, u0, u1);                                                         \
    });                                                                                          \
  }                                                                                              \
  extern "C" void snn_bwd_par_##SUF(const T* x, const T* sc, const T* sh, const T* v0,          \
                                    double v0s, const T* gs, const T* gvk, T* gy, T* gv0,        \
                                    const T* mean, double* s1, double* s2, int64_t K, int64_t M, \
                                    int64_t C, int64_t inner, double tau, double thr, double vr, \
                                    int hard, int detach_reset, int sg_id, double alpha,         \
                                    int lif, int64_t units, int parts) {                         \
    parallel_parts(units, parts, [&](int p, int64_t u0, int64_t u1) {                           \
      snn_bwd_##SUF(x, sc, sh, v0, v0s, gs, gvk, gy, gv0, mean, s1 ? s1 + p * K * C : nullptr,  \
                    s2 ? s2 + p * K * C : nullptr, K, M, C, inner, tau, thr, vr, hard,           \
                    detach_reset, sg_id, alpha, lif, u0, u1);                                    \
    });                                                                                          \
  }                                                                                              \
  extern "C" void snn_affine3_par_##SUF(T* gy, const T* x, const T* A, const T* B, const T* D,  \
                                        int64_t K, int64_t M, int64_t C, int64_t inner,         \
                                        int64_t units, int parts) {                             \
    parallel_parts(units, parts, [&](int, int64_t u0, int64_t u1) {                             \
      snn_affine3_##SUF(gy, x, A, B, D, K, M, C, inner, u0, u1);                                \
    });                                                                                          \
  }

SNN_EXPORT(float, f32)
SNN_EXPORT(double, f64)
SNN_EXPORT_PAR(float, f32)
SNN_EXPORT_PAR(double, f64)

// conv3x3 + folded affine + LIF (inference), units = rows b * H + h of the output.
#define SNN_EXPORT_CONV(T, SUF)                                                                  \
  extern "C" void snn_conv_lif_par_##SUF(                                                       \
      const T* x, int64_t sn, int64_t sc, int64_t sh, int64_t sw, const T* wt, const T* scale,  \
      const T* shift, const T* v0, double v0s, T* v_out, T* out, int64_t K, int64_t B,          \
      int64_t Cin, int64_t C, int64_t H, int64_t W, int cl, double tau, double thr, double vr,  \
      int hard, int64_t units, int parts) {                                                     \
    Lif p{tau, thr, vr, hard, 1, 1, 1.0, 1};                                                     \
    parallel_parts(units, parts, [&](int, int64_t u0, int64_t u1) {                             \
      if (C == 16 && Cin == 2) /* event frames (ON / OFF) into the reference's 16 channels */   \
        conv_lif_c<T, 16, 2>(x, sn, sc, sh, sw, wt, scale, shift, v0, T(v0s), v_out, out, K, B, \
                             Cin, C, H, W, cl, p, u0, u1);                                       \
      else                                                                                       \
        conv_lif_c<T, 0, 0>(x, sn, sc, sh, sw, wt, scale, shift, v0, T(v0s), v_out, out, K, B,  \
                            Cin, C, H, W, cl, p, u0, u1);                                        \
    });                                                                                          \
  }

SNN_EXPORT_CONV(float, f32)
SNN_EXPORT_CONV(double, f64)

// LIF (+ residual) + MaxPool2d(2) (inference, channels_last), units = row pairs b * ceil(H / 2).
namespace {
template <typename T, int RES>
void fwd_pool_h(const T* x, const T* sc, const T* sh, const T* v0, T v0s, T* v, T* out,
                const T* res, int64_t K, int64_t B, int64_t C, int64_t H, int64_t W, Lif p,
                int64_t u0, int64_t u1) {
  if (p.hard) fwd_pool_t<T, true, RES>(x, sc, sh, v0, v0s, v, out, res, K, B, C, H, W, p, u0, u1);
  else fwd_pool_t<T, false, RES>(x, sc, sh, v0, v0s, v, out, res, K, B, C, H, W, p, u0, u1);
}
}  // namespace

#define SNN_EXPORT_POOL(T, SUF)                                                                  \
  extern "C" void snn_fwd_pool_par_##SUF(const T* x, const T* sc, const T* sh, const T* v0,     \
                                         double v0s, T* v, T* out, const T* res, int64_t K,      \
                                         int64_t B, int64_t C, int64_t H, int64_t W,             \
                                         double tau, double thr, double vr, int hard,            \
                                         int res_before, int64_t units, int parts) {             \
    Lif p{tau, thr, vr, hard, 1, 1, 1.0, 1};                                                     \
    parallel_parts(units, parts, [&](int, int64_t u0, int64_t u1) {                             \
      if (res && res_before)                                                                     \
        fwd_pool_h<T, RES_BEFORE>(x, sc, sh, v0, T(v0s), v, out, res, K, B, C, H, W, p, u0, u1); \
      else if (res)                                                                              \
        fwd_pool_h<T, RES_AFTER>(x, sc, sh, v0, T(v0s), v, out, res, K, B, C, H, W, p, u0, u1);  \
      else                                                                                       \
        fwd_pool_h<T, RES_NONE>(x, sc, sh, v0, T(v0s), v, out, res, K, B, C, H, W, p, u0, u1);   \
    });                                                                                          \
  }

SNN_EXPORT_POOL(float, f32)
SNN_EXPORT_POOL(double, f64)

// Table-lookup convolution of a spike input (inference), units = output rows n * Ho + oy.
#define SNN_EXPORT_SPIKE_CONV(T, SUF)                                                            \
  extern "C" void snn_spike_conv_par_##SUF(                                                     \
      const T* x, int64_t sn, int64_t sc, int64_t sh, int64_t sw, const T* tab, T* out,         \
      int64_t Cin, int64_t C, int64_t H, int64_t W, int64_t k, int64_t s, int64_t pad,          \
      int64_t Ho, int64_t Wo, int* bad, int64_t units, int parts) {                             \
    parallel_parts(units, parts, [&](int, int64_t u0, int64_t u1) {                             \
      if (C == 16)                                                                               \
        spike_conv_k<T, 16, 2>(x, sn, sc, sh, sw, tab, out, Cin, C, H, W, k, s, pad, Ho, Wo, bad,  \
                            u0, u1);                                                             \
      else if (C == 24)                                                                          \
        spike_conv_k<T, 24, 3>(x, sn, sc, sh, sw, tab, out, Cin, C, H, W, k, s, pad, Ho, Wo, bad,  \
                            u0, u1);                                                             \
      else if (C == 32)                                                                          \
        spike_conv_k<T, 32, 4>(x, sn, sc, sh, sw, tab, out, Cin, C, H, W, k, s, pad, Ho, Wo, bad,  \
                            u0, u1);                                                             \
      else                                                                                       \
        spike_conv_k<T, 0, 0>(x, sn, sc, sh, sw, tab, out, Cin, C, H, W, k, s, pad, Ho, Wo, bad,   \
                           u0, u1);                                                              \
    });                                                                                          \
  }

SNN_EXPORT_SPIKE_CONV(float, f32)
SNN_EXPORT_SPIKE_CONV(double, f64)

// Strided 1x1 convolution: forward (units = output rows n * Ho + oy) and input gradient
// (units = input rows n * H + y); the reference's channel counts compile with fixed sizes.
#define SNN_PW_SIZES(F, TY, ...)                                                                 \
  if (C == 16 && Cin == 16) F<TY, 16, 16>(__VA_ARGS__);                                         \
  else if (C == 24 && Cin == 16) F<TY, 24, 16>(__VA_ARGS__);                                    \
  else if (C == 32 && Cin == 24) F<TY, 32, 24>(__VA_ARGS__);                                    \
  else F<TY, 0, 0>(__VA_ARGS__)
#define SNN_EXPORT_PW(T, SUF)                                                                    \
  extern "C" void snn_pw_fwd_par_##SUF(const T* x, int64_t sn, int64_t sc, int64_t sh,          \
                                       int64_t sw, const T* wt, T* out, int64_t Cin, int64_t C,  \
                                       int64_t s, int64_t Ho, int64_t Wo, int64_t units,         \
                                       int parts) {                                              \
    parallel_parts(units, parts, [&](int, int64_t u0, int64_t u1) {                             \
      SNN_PW_SIZES(pw_fwd_t, T, x, sn, sc, sh, sw, wt, out, Cin, C, s, Ho, Wo, u0, u1);          \
    });                                                                                          \
  }                                                                                              \
  extern "C" void snn_pw_grad_par_##SUF(const T* g, const T* wt, T* gx, int64_t sn, int64_t sc, \
                                        int64_t sh, int64_t sw, int64_t Cin, int64_t C,          \
                                        int64_t H, int64_t W, int64_t s, int64_t Ho, int64_t Wo, \
                                        int64_t units, int parts) {                              \
    parallel_parts(units, parts, [&](int, int64_t u0, int64_t u1) {                             \
      SNN_PW_SIZES(pw_grad_t, T, g, wt, gx, sn, sc, sh, sw, Cin, C, H, W, s, Ho, Wo, u0, u1);    \
    });                                                                                          \
  }                                                                                              \
  extern "C" void snn_pw_wgrad_par_##SUF(const T* x, int64_t sn, int64_t sc, int64_t sh,        \
                                         int64_t sw, const T* g, double* gw, int64_t Cin,        \
                                         int64_t C, int64_t s, int64_t Ho, int64_t Wo,           \
                                         int64_t units, int parts) {                             \
    parallel_parts(units, parts, [&](int p, int64_t u0, int64_t u1) {                           \
      SNN_PW_SIZES(pw_wgrad_t, T, x, sn, sc, sh, sw, g, gw + p * Cin * C, Cin, C, s, Ho, Wo, u0, \
                   u1);                                                                          \
    });                                                                                          \
  }

SNN_EXPORT_PW(float, f32)
SNN_EXPORT_PW(double, f64)
#undef SNN_PW_SIZES

extern "C" int snn_abi_version() { return 9; }

// The instruction-set path compiled in: 2 AVX-512, 1 AVX2 + FMA, 0 portable.
extern "C" int snn_isa() { return SNN_ISA; }
