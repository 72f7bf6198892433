// Fused per-time-step BatchNorm + LIF kernels for chunked SNN execution on CPU.
//
// Plain C ABI (no torch headers): compiles in about a second with g++, loaded with ctypes.
// A chunk of K steps is time-major: step k's data is the contiguous block x[k*M, (k+1)*M).
// Within a step the layout is NCHW ("inner" = H*W, channel constant along a run) or
// channels_last ("inner" = 1, channel = index % C). Work is split over "units": rows (b, c)
// of H*W elements (NCHW) or pixels of C elements (channels_last); callers run disjoint unit
// ranges in parallel threads (ctypes releases the GIL).
//
// Neuron: SpikingJelly LIF with decay_input: h = v + (y - (v - v_reset)) / tau, spike =
// h >= thr, soft reset v = h - spike * thr or hard reset v = spike * v_reset + (1 - spike) * h.
// Arithmetic follows SpikingJelly's reference order (division by tau), so float64 results
// match the per-step path to rounding.

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

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

// Geometry of one step's block: runs of `run` contiguous elements; channel per element.
struct Geo {
  int64_t K, M, C, inner;
  int64_t run() const { return inner == 1 ? C : inner; }
};

// Iterate over tiles [a, a + n) of one step's block within units [u0, u1); for NCHW a tile
// stays inside one row (constant channel c0), for channels_last it holds whole pixels.
template <typename F>
inline void for_tiles(const Geo& g, int64_t u0, int64_t u1, F&& f) {
  if (g.inner == 1) {
    int64_t per = TILE / g.C > 0 ? TILE / g.C : 1;  // pixels per tile
    for (int64_t u = u0; u < u1; u += per) {
      int64_t nu = (u + per <= u1) ? per : u1 - u;
      f(u * g.C, nu * g.C, int64_t(-1));
    }
  } else {
    for (int64_t u = u0; u < u1; ++u) {
      int64_t c = u % g.C;
      for (int64_t i = 0; i < g.inner; i += TILE) {
        int64_t n = (i + TILE <= g.inner) ? TILE : g.inner - i;
        f(u * g.inner + i, n, c);
      }
    }
  }
}

template <typename T>
inline T lif_step(T y, T& v, const Lif& p, T tau, T thr, T vr) {
  T h = v + (y - (v - vr)) / tau;
  T s = h >= thr ? T(1) : T(0);
  v = p.hard ? s * vr + (T(1) - s) * h : h - s * thr;
  return s;
}

// Per (step, channel) sums of (x - ref) and (x - ref)^2 in double (ref: a value of that step
// and channel, for a well-conditioned one-pass variance).
template <typename T>
void stats(const T* x, const T* ref, double* s1, double* s2, Geo g, int64_t u0, int64_t u1) {
  std::memset(s1, 0, sizeof(double) * g.K * g.C);
  std::memset(s2, 0, sizeof(double) * g.K * g.C);
  for (int64_t k = 0; k < g.K; ++k) {
    const T* xk = x + k * g.M;
    double* a1 = s1 + k * g.C;
    double* a2 = s2 + k * g.C;
    const T* r = ref + k * g.C;
    for_tiles(g, u0, u1, [&](int64_t off, int64_t n, int64_t c) {
      if (c >= 0) {
        double acc1 = 0, acc2 = 0, rc = double(r[c]);
#pragma omp simd reduction(+ : acc1, acc2)
        for (int64_t i = 0; i < n; ++i) {
          double d = double(xk[off + i]) - rc;
          acc1 += d;
          acc2 += d * d;
        }
        a1[c] += acc1;
        a2[c] += acc2;
      } else {
        for (int64_t p = 0; p < n; p += g.C) {
#pragma omp simd
          for (int64_t cc = 0; cc < g.C; ++cc) {
            double d = double(xk[off + p + cc]) - double(r[cc]);
            a1[cc] += d;
            a2[cc] += d * d;
          }
        }
      }
    });
  }
}

// Forward: y = x * scale[k, c] + shift[k, c] (or y = x without scale), then LIF; writes the
// spikes (or y when p.lif == 0) to out and the final membrane to v (in: initial membrane).
template <typename T>
void fwd(const T* x, const T* scale, const T* shift, T* v, T* out, Geo g, Lif p, int64_t u0,
         int64_t u1) {
  const T tau = T(p.tau), thr = T(p.thr), vr = T(p.vr);
  for_tiles(g, u0, u1, [&](int64_t off, int64_t n, int64_t c) {
    T vt[TILE];
    if (p.lif) std::memcpy(vt, v + off, sizeof(T) * n);
    for (int64_t k = 0; k < g.K; ++k) {
      const T* xk = x + k * g.M + off;
      T* ok = out + k * g.M + off;
      const T* sc = scale ? scale + k * g.C : nullptr;
      const T* sh = scale ? shift + k * g.C : nullptr;
      if (c >= 0) {
        T a = sc ? sc[c] : T(1), b = sc ? sh[c] : T(0);
        if (!p.lif) {
          for (int64_t i = 0; i < n; ++i) ok[i] = sc ? xk[i] * a + b : xk[i];
        } else if (sc) {
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) ok[i] = lif_step(xk[i] * a + b, vt[i], p, tau, thr, vr);
        } else {
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) ok[i] = lif_step(xk[i], vt[i], p, tau, thr, vr);
        }
      } else {
        for (int64_t q = 0; q < n; q += g.C) {
          if (!p.lif) {
            for (int64_t cc = 0; cc < g.C; ++cc)
              ok[q + cc] = sc ? xk[q + cc] * sc[cc] + sh[cc] : xk[q + cc];
          } else if (sc) {
#pragma omp simd
            for (int64_t cc = 0; cc < g.C; ++cc)
              ok[q + cc] = lif_step(xk[q + cc] * sc[cc] + sh[cc], vt[q + cc], p, tau, thr, vr);
          } else {
#pragma omp simd
            for (int64_t cc = 0; cc < g.C; ++cc)
              ok[q + cc] = lif_step(xk[q + cc], vt[q + cc], p, tau, thr, vr);
          }
        }
      }
    }
    if (p.lif) std::memcpy(v + off, vt, sizeof(T) * n);
  });
}

template <typename T, int SG>
inline T surrogate_t(T x, T a) {
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

// One step of the LIF backward over a tile: gy = dL/dy, carry = dL/dv (in: from step k + 1).
template <typename T, int SG, bool HARD, bool DETACH>
inline void lif_bwd_row(const T* h, const T* gs, T* gy, T* carry, int64_t n, T tau, T thr, T vr,
                        T a) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    T hi = h[i];
    T sg = surrogate_t<T, SG>(hi - thr, a);
    T rg;
    if constexpr (!HARD) {
      rg = DETACH ? T(1) : T(1) - thr * sg;
    } else {
      rg = T(1) - (hi >= thr ? T(1) : T(0));
      if constexpr (!DETACH) rg = rg + (vr - hi) * sg;
    }
    T gh = gs[i] * sg + carry[i] * rg;
    gy[i] = gh / tau;
    carry[i] = gh - gh / tau;
  }
}

// Backward of fwd. gs: gradient of the outputs; gvk: gradient of the final membrane (or null).
// Writes gy (gradient of the affine output y; may alias gs) and gv0; when s1 is set,
// accumulates per (k, c) sum(gy) into s1 and sum(gy * (x - mean)) into s2 (BatchNorm).
// The membranes are recomputed tile by tile from x and v0 (nothing stored by the forward).
template <typename T, int SG, bool HARD, bool DETACH>
void bwd_t(const T* x, const T* scale, const T* shift, const T* v0, const T* gs, const T* gvk,
           T* gy, T* gv0, const T* mean, double* s1, double* s2, Geo g, Lif p, int64_t u0,
           int64_t u1) {
  const T tau = T(p.tau), thr = T(p.thr), vr = T(p.vr), a = T(p.alpha);
  const bool sums = s1 != nullptr;
  if (sums) {
    std::memset(s1, 0, sizeof(double) * g.K * g.C);
    std::memset(s2, 0, sizeof(double) * g.K * g.C);
  }
  T* hb = static_cast<T*>(std::malloc(sizeof(T) * TILE * g.K));
  for_tiles(g, u0, u1, [&](int64_t off, int64_t n, int64_t c) {
    T carry[TILE];
    if (p.lif) {
      T* vt = carry;  // the membrane tile, then the carried gradient
      std::memcpy(vt, v0 + off, sizeof(T) * n);
      for (int64_t k = 0; k < g.K; ++k) {  // recompute h
        const T* xk = x + k * g.M + off;
        T* hk = hb + k * TILE;
        const T* sc = scale ? scale + k * g.C : nullptr;
        const T* sh = scale ? shift + k * g.C : nullptr;
        auto step = [&](int64_t i, T y) {
          T h = vt[i] + (y - (vt[i] - vr)) / tau;
          hk[i] = h;
          T s = h >= thr ? T(1) : T(0);
          vt[i] = HARD ? s * vr + (T(1) - s) * h : h - s * thr;
        };
        if (!sc) {
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) step(i, xk[i]);
        } else if (c >= 0) {
          T sa = sc[c], sb = sh[c];
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) step(i, xk[i] * sa + sb);
        } else {
          for (int64_t q = 0; q < n; q += g.C) {
#pragma omp simd
            for (int64_t cc = 0; cc < g.C; ++cc) step(q + cc, xk[q + cc] * sc[cc] + sh[cc]);
          }
        }
      }
      for (int64_t i = 0; i < n; ++i) carry[i] = gvk ? gvk[off + i] : T(0);
    }
    for (int64_t k = g.K - 1; k >= 0; --k) {
      const T* gk = gs + k * g.M + off;
      T* gyk = gy + k * g.M + off;
      if (p.lif) {
        lif_bwd_row<T, SG, HARD, DETACH>(hb + k * TILE, gk, gyk, carry, n, tau, thr, vr, a);
      } else if (gyk != gk) {
        std::memcpy(gyk, gk, sizeof(T) * n);
      }
      if (!sums) continue;
      const T* xk = x + k * g.M + off;
      const T* mk = mean + k * g.C;
      double* a1 = s1 + k * g.C;
      double* a2 = s2 + k * g.C;
      if (c >= 0) {
        double acc1 = 0, acc2 = 0, m = double(mk[c]);
#pragma omp simd reduction(+ : acc1, acc2)
        for (int64_t i = 0; i < n; ++i) {
          double gv = double(gyk[i]);
          acc1 += gv;
          acc2 += gv * (double(xk[i]) - m);
        }
        a1[c] += acc1;
        a2[c] += acc2;
      } else {
        for (int64_t q = 0; q < n; q += g.C) {
#pragma omp simd
          for (int64_t cc = 0; cc < g.C; ++cc) {
            double gv = double(gyk[q + cc]);
            a1[cc] += gv;
            a2[cc] += gv * (double(xk[q + cc]) - double(mk[cc]));
          }
        }
      }
    }
    if (p.lif) std::memcpy(gv0 + off, carry, sizeof(T) * n);
  });
  std::free(hb);
}

template <typename T, int SG>
void bwd_sg(const T* x, const T* scale, const T* shift, const T* v0, const T* gs, const T* gvk,
            T* gy, T* gv0, const T* mean, double* s1, double* s2, Geo g, Lif p, int64_t u0,
            int64_t u1) {
  if (p.hard) {
    if (p.detach_reset)
      bwd_t<T, SG, true, true>(x, scale, shift, v0, gs, gvk, gy, gv0, mean, s1, s2, g, p, u0, u1);
    else
      bwd_t<T, SG, true, false>(x, scale, shift, v0, gs, gvk, gy, gv0, mean, s1, s2, g, p, u0, u1);
  } else {
    if (p.detach_reset)
      bwd_t<T, SG, false, true>(x, scale, shift, v0, gs, gvk, gy, gv0, mean, s1, s2, g, p, u0, u1);
    else
      bwd_t<T, SG, false, false>(x, scale, shift, v0, gs, gvk, gy, gv0, mean, s1, s2, g, p, u0,
                                 u1);
  }
}

template <typename T>
void bwd(const T* x, const T* scale, const T* shift, const T* v0, const T* gs, const T* gvk,
         T* gy, T* gv0, const T* mean, double* s1, double* s2, Geo g, Lif p, int64_t u0,
         int64_t u1) {
  switch (p.sg_id) {
    case 0: bwd_sg<T, 0>(x, scale, shift, v0, gs, gvk, gy, gv0, mean, s1, s2, g, p, u0, u1); break;
    case 1: bwd_sg<T, 1>(x, scale, shift, v0, gs, gvk, gy, gv0, mean, s1, s2, g, p, u0, u1); break;
    case 2: bwd_sg<T, 2>(x, scale, shift, v0, gs, gvk, gy, gv0, mean, s1, s2, g, p, u0, u1); break;
    default: bwd_sg<T, 3>(x, scale, shift, v0, gs, gvk, gy, gv0, mean, s1, s2, g, p, u0, u1);
  }
}

// dx = A[k, c] * gy + B[k, c] * x + D[k, c], in place into gy (BatchNorm input gradient).
template <typename T>
void affine3(T* gy, const T* x, const T* A, const T* B, const T* D, Geo g, int64_t u0,
             int64_t u1) {
  for (int64_t k = 0; k < g.K; ++k) {
    T* gk = gy + k * g.M;
    const T* xk = x + k * g.M;
    const T *ak = A + k * g.C, *bk = B + k * g.C, *dk = D + k * g.C;
    for_tiles(g, u0, u1, [&](int64_t off, int64_t n, int64_t c) {
      if (c >= 0) {
        T a = ak[c], b = bk[c], d = dk[c];
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) gk[off + i] = a * gk[off + i] + b * xk[off + i] + d;
      } else {
        for (int64_t q = 0; q < n; q += g.C) {
#pragma omp simd
          for (int64_t cc = 0; cc < g.C; ++cc)
            gk[off + q + cc] = ak[cc] * gk[off + q + cc] + bk[cc] * xk[off + q + cc] + dk[cc];
        }
      }
    });
  }
}

}  // namespace

#define SNN_EXPORT(T, SUF)                                                                       \
  extern "C" void snn_stats_##SUF(const T* x, const T* ref, double* s1, double* s2, int64_t K,  \
                                  int64_t M, int64_t C, int64_t inner, int64_t u0, int64_t u1) { \
    stats<T>(x, ref, s1, s2, Geo{K, M, C, inner}, u0, u1);                                       \
  }                                                                                              \
  extern "C" void snn_fwd_##SUF(const T* x, const T* scale, const T* shift, T* v, T* out,       \
                                int64_t K, int64_t M, int64_t C, int64_t inner, double tau,      \
                                double thr, double vr, int hard, int lif, int64_t u0,           \
                                int64_t u1) {                                                    \
    fwd<T>(x, scale, shift, v, out, Geo{K, M, C, inner},                                         \
           Lif{tau, thr, vr, hard, 1, 1, 1.0, lif}, u0, u1);                                     \
  }                                                                                              \
  extern "C" void snn_bwd_##SUF(const T* x, const T* scale, const T* shift, const T* v0,        \
                                const T* gs, const T* gvk, T* gy, T* gv0, const T* mean,         \
                                double* s1, double* s2, int64_t K, int64_t M, int64_t C,         \
                                int64_t inner, double tau, double thr, double vr, int hard,      \
                                int detach_reset, int sg_id, double alpha, int lif, int64_t u0,  \
                                int64_t u1) {                                                    \
    bwd<T>(x, scale, shift, v0, gs, gvk, gy, gv0, mean, s1, s2, Geo{K, M, C, inner},             \
           Lif{tau, thr, vr, hard, detach_reset, sg_id, alpha, lif}, u0, u1);                    \
  }                                                                                              \
  extern "C" void snn_affine3_##SUF(T* gy, const T* x, const T* A, const T* B, const T* D,      \
                                    int64_t K, int64_t M, int64_t C, int64_t inner, int64_t u0,  \
                                    int64_t u1) {                                                \
    affine3<T>(gy, x, A, B, D, Geo{K, M, C, inner}, u0, u1);                                     \
  }

SNN_EXPORT(float, f32)
SNN_EXPORT(double, f64)

extern "C" int snn_abi_version() { return 1; }
