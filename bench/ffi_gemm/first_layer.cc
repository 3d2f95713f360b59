// An experiment (bench/ffi_gemm.py): the first layer's matmuls and W1 update
// as hand-written AVX-512 kernels, called from XLA:CPU through the XLA FFI.
//
// The question it answers: is XLA's Eigen matmul what keeps the default
// training step below 75% of the matmul peak on a 2-core CPU? Eigen packs
// both operands into blocks on every call; these kernels read them in place
// (row-major, one contiguous axis each: all an outer-product micro-kernel
// of 14 x 32 floats needs), and the gradient kernel applies the SGD update
// to W1 as it writes it, with the sum of squares of the new weights (the
// next step's L2 penalty) on the side: the gradient is never stored, and W1
// is read once per step instead of twice (update, then penalty).
//
//   mlp_matmul:      c = a @ b                          a (M, K), b (K, N)
//   mlp_sgd_update:  w' = scale * w - step * (a^T @ b)  w (R, N), a (K, R),
//                    b (K, N), scale and step (1,); also row_sumsq (R, P),
//                    the sum of w'^2 of each row over each 32-column panel.
//
// Work is split into chunks run by the calling thread and helpers on XLA's
// intra-op thread pool; every output element comes from one chunk with a
// fixed order of additions, so results do not depend on the schedule.

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kMr = 14;  // rows of the register tile
constexpr int kNv = 2;   // 16-float vectors per row of the tile
constexpr int kNr = 16 * kNv;
constexpr int kRowBlock = 4 * kMr;  // rows per block of the update kernel

// A(i, k) = a[i * ars + k * acs]; B(k, j) = b[k * ldb + j].
struct Operands {
  const float* a;
  int64_t ars, acs;
  const float* b;
  int64_t ldb;
  int64_t k;
};

// What happens to a finished tile of sums `acc` for rows [0, mr).
struct Store {  // c = acc
  float* c;
  int64_t ldc;
};
struct SgdUpdate {  // w = scale * w - step * acc; sumsq[i] += w^2 (16 lanes)
  float* w;
  int64_t ldw;
  float scale, step;
  __m512* sumsq;  // per row, 16 lanes
};

template <int MR, int NV>
inline void Finish(const Store& s, __m512 (&acc)[MR][NV], __mmask16 last) {
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      _mm512_mask_storeu_ps(s.c + i * s.ldc + 16 * v, v == NV - 1 ? last : 0xFFFF,
                            acc[i][v]);
}

template <int MR, int NV>
inline void Finish(const SgdUpdate& s, __m512 (&acc)[MR][NV], __mmask16 last) {
  const __m512 scale = _mm512_set1_ps(s.scale);
  const __m512 step = _mm512_set1_ps(s.step);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const __mmask16 m = v == NV - 1 ? last : 0xFFFF;
      float* p = s.w + i * s.ldw + 16 * v;
      const __m512 w = _mm512_fnmadd_ps(
          step, acc[i][v], _mm512_mul_ps(scale, _mm512_maskz_loadu_ps(m, p)));
      _mm512_mask_storeu_ps(p, m, w);
      s.sumsq[i] = _mm512_fmadd_ps(w, w, s.sumsq[i]);  // masked lanes are 0
    }
  }
}

// One MR x (16 NV) tile over the whole k axis; `last` masks the tile's last
// vector of columns (loads included, so nothing past the edge is read).
template <int MR, int NV, typename Out>
inline void Tile(const Operands& o, const Out& out, __mmask16 last) {
  __m512 acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  const float* a = o.a;
  const float* b = o.b;
  for (int64_t k = 0; k < o.k; ++k, a += o.acs, b += o.ldb) {
    __m512 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      bv[v] = v == NV - 1 ? _mm512_maskz_loadu_ps(last, b + 16 * v)
                          : _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512 av = _mm512_set1_ps(a[i * o.ars]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
    }
  }
  Finish<MR, NV>(out, acc, last);
}

inline Store Offset(const Store& s, int64_t i, int64_t j) {
  return {s.c + i * s.ldc + j, s.ldc};
}
inline SgdUpdate Offset(const SgdUpdate& s, int64_t i, int64_t j) {
  return {s.w + i * s.ldw + j, s.ldw, s.scale, s.step, s.sumsq + i};
}
inline Operands Offset(const Operands& o, int64_t i, int64_t j) {
  return {o.a + i * o.ars, o.ars, o.acs, o.b + j, o.ldb, o.k};
}

// Rows [0, m) of one column panel [j, j + width), width <= kNr.
template <int NV, typename Out>
void Panel(const Operands& o, const Out& out, int64_t m, int64_t j, int64_t width) {
  const int64_t rest = width - 16 * (NV - 1);
  const __mmask16 last = rest >= 16 ? 0xFFFF : (__mmask16)((1u << rest) - 1);
  int64_t i = 0;
  for (; i + kMr <= m; i += kMr)
    Tile<kMr, NV>(Offset(o, i, j), Offset(out, i, j), last);
  const Operands oi = Offset(o, i, j);
  const Out outi = Offset(out, i, j);
  switch (m - i) {
#define MLP_EDGE(R) \
  case R:           \
    Tile<R, NV>(oi, outi, last); \
    break;
    MLP_EDGE(1) MLP_EDGE(2) MLP_EDGE(3) MLP_EDGE(4) MLP_EDGE(5) MLP_EDGE(6)
    MLP_EDGE(7) MLP_EDGE(8) MLP_EDGE(9) MLP_EDGE(10) MLP_EDGE(11) MLP_EDGE(12)
    MLP_EDGE(13)
#undef MLP_EDGE
    default:
      break;
  }
}

template <typename Out>
void Columns(const Operands& o, const Out& out, int64_t m, int64_t j, int64_t width) {
  if (width > 16 * (kNv - 1)) {
    Panel<kNv>(o, out, m, j, width);
  } else {
    Panel<1>(o, out, m, j, width);
  }
}

// Runs fn(0 .. n-1), each index once, on this thread and the pool's.
template <typename Fn>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, const Fn& fn) {
  struct Shared {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto shared = std::make_shared<Shared>();
  // A helper runs `fn` only for indices it claims while some are left, and
  // the caller returns only when every claimed index is done, so `fn` (on
  // the caller's stack) outlives its uses; a helper that starts late finds
  // nothing to claim and touches only `shared`.
  auto work = [](Shared& s, int64_t n, const Fn& fn) {
    for (int64_t i; (i = s.next.fetch_add(1)) < n;) {
      fn(i);
      s.done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  for (int64_t h = 0; h < helpers; ++h) {
    pool.Schedule([shared, n, &fn, work] { work(*shared, n, fn); });
  }
  work(*shared, n, fn);
  while (shared->done.load(std::memory_order_acquire) < n) {
    _mm_pause();
  }
}

// Chunk c of `chunks` contiguous ranges of `panels` column panels. Each
// thread then keeps its columns of the weights in its own caches from one
// kernel (and one step) to the next, instead of fetching them from the
// other core's.
inline std::pair<int64_t, int64_t> PanelRange(int64_t c, int64_t chunks, int64_t panels) {
  return {c * panels / chunks, (c + 1) * panels / chunks};
}

ffi::Error Matmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                  ffi::ResultBuffer<ffi::F32> c) {
  const auto ad = a.dimensions();
  const auto bd = b.dimensions();
  if (ad.size() != 2 || bd.size() != 2 || ad[1] != bd[0]) {
    return ffi::Error::InvalidArgument("mlp_matmul: expected a (M, K) and b (K, N)");
  }
  const int64_t m = ad[0], k = ad[1], n = bd[1];
  const Operands o{a.typed_data(), k, 1, b.typed_data(), n, k};
  const Store out{c->typed_data(), n};
  const int64_t panels = (n + kNr - 1) / kNr;
  const int64_t chunks = std::clamp<int64_t>(pool.num_threads(), 1, panels);
  ParallelFor(pool, chunks, [&](int64_t chunk) {
    const auto [p0, p1] = PanelRange(chunk, chunks, panels);
    for (int64_t j = p0 * kNr; j < std::min(n, p1 * kNr); j += kNr) {
      Columns(o, out, m, j, std::min<int64_t>(kNr, n - j));
    }
  });
  return ffi::Error::Success();
}

ffi::Error SgdUpdate_(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> w,
                      ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                      ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::F32> step,
                      ffi::ResultBuffer<ffi::F32> w_out,
                      ffi::ResultBuffer<ffi::F32> row_sumsq) {
  const auto wd = w.dimensions();
  const auto ad = a.dimensions();
  const auto bd = b.dimensions();
  const auto sd = row_sumsq->dimensions();
  if (wd.size() != 2 || ad.size() != 2 || bd.size() != 2 || sd.size() != 2) {
    return ffi::Error::InvalidArgument("mlp_sgd_update: expected rank-2 arrays");
  }
  const int64_t r = wd[0], n = wd[1], k = bd[0];
  const int64_t panels = (n + kNr - 1) / kNr;
  if (ad[0] != k || ad[1] != r || bd[1] != n || scale.element_count() != 1 ||
      step.element_count() != 1 || sd[0] != r || sd[1] != panels) {
    return ffi::Error::InvalidArgument("mlp_sgd_update: inconsistent shapes");
  }
  if (w_out->typed_data() != w.typed_data()) {
    std::copy_n(w.typed_data(), r * n, w_out->typed_data());
  }
  // A(i, k) = a[k, i]: for each k, consecutive rows i are contiguous.
  const Operands o{a.typed_data(), 1, r, b.typed_data(), n, k};
  float* wp = w_out->typed_data();
  float* sumsq = row_sumsq->typed_data();
  const float s = scale.typed_data()[0], t = step.typed_data()[0];
  // Threads split the columns, as the matmul does, so each keeps its
  // columns of `w` in its own caches from the forward matmul to the update.
  const int64_t chunks = std::clamp<int64_t>(pool.num_threads(), 1, panels);
  ParallelFor(pool, chunks, [&](int64_t chunk) {
    const auto [p0, p1] = PanelRange(chunk, chunks, panels);
    __m512 ss[kRowBlock];
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t j = p * kNr;
      for (int64_t i0 = 0; i0 < r; i0 += kRowBlock) {
        const int64_t m = std::min<int64_t>(kRowBlock, r - i0);
        for (int64_t i = 0; i < m; ++i) ss[i] = _mm512_setzero_ps();
        const SgdUpdate out{wp + i0 * n, n, s, t, ss};
        Columns(Offset(o, i0, 0), out, m, j, std::min<int64_t>(kNr, n - j));
        for (int64_t i = 0; i < m; ++i) {
          sumsq[(i0 + i) * panels + p] = _mm512_reduce_add_ps(ss[i]);
        }
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MlpMatmul, Matmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(MlpSgdUpdate, SgdUpdate_,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
