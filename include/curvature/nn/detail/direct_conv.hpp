#pragma once
// Direct stride-1 convolution for the Channels layout, without im2col: the output is computed in
// SIMD vectors along each output row, L = one packet of T (16 floats with AVX-512), for blocks of
// up to 8 output channels at once, reading a zero-padded copy of one sample's input planes that
// stays in L1. An im2col product writes and then packs C*k*k values per output position before
// the GEMM reads them; this kernel reads each input value straight from the padded planes
// (bench_nn TinyCNN at B = 128, 1 thread: the 16->32 channel 16x16 convolution's forward pass
// 5.9 ms with im2col + OpenBLAS, 3.3 ms here).
//
// The transposed convolution of a stride-1 layer is itself a stride-1 convolution (of the
// cotangent, with the weights flipped and input/output channels swapped, padding k-1-p), so
// input gradients run through the same kernel.
#include <Eigen/Core>
#include <algorithm>
#include <type_traits>
#include <utility>

#include "curvature/core/types.hpp"

namespace curvature::nn::detail {

/// Geometry of one direct convolution: `cin` input planes h x w, padded by `pad` on every side,
/// kernel k x k, stride 1; `cout` output planes ho x wo.
struct DirectConvShape {
  Index cin, h, w, pad, k, cout;
  Index ho() const { return h + 2 * pad - k + 1; }
  Index wo() const { return w + 2 * pad - k + 1; }
  Index hp() const { return h + 2 * pad; }
  Index wp() const { return w + 2 * pad; }
  /// Row length of the shifted copies (direct_shift): wo rounded up to whole packets.
  template <class T>
  Index ws() const {
    constexpr Index L = Eigen::internal::packet_traits<T>::size;
    return (wo() + L - 1) / L * L;
  }
  /// Scalars of one sample's shifted copies.
  template <class T>
  Index shifted_size() const {
    return k * cin * hp() * ws<T>();
  }
  /// Scalars of one sample's padded planes, with slack for the last row's full-packet loads.
  template <class T>
  Index pad_size() const {
    return cin * hp() * wp() + Eigen::internal::packet_traits<T>::size;
  }
};

/// Calls f(std::integral_constant<int, I>) for I = 0 .. N-1, unrolled at compile time: the
/// accumulator arrays of the kernels are then indexed by constants only, which GCC keeps in
/// registers (with runtime loop indices it kept them in memory in some callers).
template <int N, class F>
inline void unroll(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) { (f(std::integral_constant<int, I>{}), ...); }(
      std::make_integer_sequence<int, N>{});
}

/// Output channels per register block.
inline constexpr Index direct_block = 8;

/// Packs the weights of a convolution for the kernel: w_t is W^T [C*k*k, Cout] column-major
/// (theta's layout), out gets, per block of up to 8 output channels, [C*k*k][block] contiguous.
/// With `transposed`, packs the weights of the transposed convolution instead (input channels
/// Cout, output channels C, kernel flipped in both directions).
template <class T>
void direct_pack(const T* w_t, Index c, Index k, Index cout, bool transposed, T* out) {
  const Index kk = k * k, ckk = c * kk;
  const Index in_ch = transposed ? cout : c, out_ch = transposed ? c : cout, q_all = in_ch * kk;
  for (Index cb = 0; cb < out_ch; cb += direct_block) {
    const Index bw = std::min(direct_block, out_ch - cb);
    T* blk = out + cb * q_all;
    for (Index q = 0; q < q_all; ++q)
      for (Index j = 0; j < bw; ++j) {
        const Index o = cb + j;
        if (!transposed) {
          blk[q * bw + j] = w_t[q + o * ckk];
        } else {  // q = (co*k + ki')*k + kj' reads W[co, o, k-1-ki', k-1-kj']
          const Index co = q / kk, rest = kk - 1 - q % kk;
          blk[q * bw + j] = w_t[o * kk + rest + co * ckk];
        }
      }
  }
}

/// Writes the zero-padded planes of one sample: planes c of `in` start at in + c*ld_in (sample
/// offset applied by the caller), each h x w row-major.
template <class T>
void direct_pad(const DirectConvShape& s, const T* in, Index ld_in, T* pad) {
  const Index hp = s.hp(), wp = s.wp();
  for (Index c = 0; c < s.cin; ++c) {
    T* plane = pad + c * hp * wp;
    std::fill(plane, plane + s.pad * wp, T(0));
    for (Index h = 0; h < s.h; ++h) {
      T* row = plane + (h + s.pad) * wp;
      std::fill(row, row + s.pad, T(0));
      std::copy(in + c * ld_in + h * s.w, in + c * ld_in + (h + 1) * s.w, row + s.pad);
      std::fill(row + s.pad + s.w, row + wp, T(0));
    }
    std::fill(plane + (s.h + s.pad) * wp, plane + hp * wp, T(0));
  }
  const Index slack = s.pad_size<T>() - s.cin * hp * wp;
  std::fill(pad + s.cin * hp * wp, pad + s.cin * hp * wp + slack, T(0));
}

/// a[0] + ... + a[len - 1] in an order fixed by len alone (two packets of lanes, unaligned loads,
/// then the tail), so the sum of the same values is the same bits wherever they lie; Eigen's
/// reductions start their packets at the first aligned address.
template <class T>
T fixed_order_sum(const T* a, Index len) {
  namespace ei = Eigen::internal;
  using Packet = typename ei::packet_traits<T>::type;
  constexpr Index L = ei::packet_traits<T>::size;
  Packet s0 = ei::pset1<Packet>(T(0)), s1 = ei::pset1<Packet>(T(0));
  Index k = 0;
  for (; k + 2 * L <= len; k += 2 * L) {
    s0 = ei::padd(s0, ei::ploadu<Packet>(a + k));
    s1 = ei::padd(s1, ei::ploadu<Packet>(a + k + L));
  }
  if (k + L <= len) {
    s0 = ei::padd(s0, ei::ploadu<Packet>(a + k));
    k += L;
  }
  T sum = ei::predux(ei::padd(s0, s1));
  for (; k < len; ++k) sum += a[k];
  return sum;
}

/// Vector registers of the target (32 with AVX-512, 16 otherwise): bounds the accumulator tile.
inline constexpr int direct_registers =
#if defined(EIGEN_VECTORIZE_AVX512)
    32;
#else
    16;
#endif

/// Output rows per step of direct_block_kernel for CO channels and a k x k kernel (K > 0): 2 when
/// the 2*CO accumulators, K + 1 input rows and one broadcast weight fit in the registers, else 1.
/// Consecutive output rows share input rows (row oh + ki is row (oh + 1) + (ki - 1)) and each
/// broadcast weight feeds both rows' FMAs. Measured on the AVX-512 VM of 2026-12-02 (a kernel-only
/// loop over 128 samples, TinyCNN's shapes, best of 30): 3x3 convolutions 16->32 channels on 16x16
/// planes 2.06-2.72 -> 1.71-1.78 ms, 3->16 on 32x32 0.82-1.07 -> 0.68 ms; 3 rows (24 accumulators
/// with 8 channels) spilled and ran 2x slower than 1.
template <int CO, int K>
constexpr int direct_rows() {
  if constexpr (K <= 0) {
    return 1;
  } else {
    return CO * 2 + 2 + K - 1 + 1 <= direct_registers ? 2 : 1;
  }
}

/// Rows [oh0, oh1) of one block of CO output channels, RH rows per step ((oh1 - oh0) % RH == 0);
/// K = 0: k at run time (then RH = 1).
template <class T, int CO, int K, int RH>
[[gnu::noinline]] void direct_block_kernel(const DirectConvShape& s, const T* pad, const T* wq, const T* bias,
                                           bool accumulate, T* out, Index ld_out, Index oh0, Index oh1) {
  static_assert(RH == 1 || K > 0, "several rows per step need a compile-time kernel size");
  using Packet = typename Eigen::internal::packet_traits<T>::type;
  constexpr Index L = Eigen::internal::packet_traits<T>::size;
  namespace ei = Eigen::internal;
  const Index k = K > 0 ? K : s.k, hp = s.hp(), wp = s.wp(), wo = s.wo();
  alignas(64) T tail[L];
  for (Index oh = oh0; oh < oh1; oh += RH)
    for (Index ow = 0; ow < wo; ow += L) {
      const bool full = ow + L <= wo;
      const Index lanes = full ? L : wo - ow;
      Packet acc[RH][CO];
      unroll<RH>([&](auto r) {
        unroll<CO>([&](auto j) {
          T* o = out + j * ld_out + (oh + r) * wo + ow;
          if (accumulate) {
            if (full) acc[r][j] = ei::ploadu<Packet>(o);
            else {
              std::fill(tail, tail + L, T(0));
              std::copy(o, o + lanes, tail);
              acc[r][j] = ei::pload<Packet>(tail);
            }
            if (bias) acc[r][j] = ei::padd(acc[r][j], ei::pset1<Packet>(bias[j]));
          } else {
            acc[r][j] = ei::pset1<Packet>(bias ? bias[j] : T(0));
          }
        });
      });
      if constexpr (K > 0) {
        for (Index c = 0; c < s.cin; ++c) {
          const T* base = pad + c * hp * wp + oh * wp + ow;
          const T* wc = wq + c * K * K * CO;
          unroll<K>([&](auto kj) {
            Packet x[RH + K - 1];
            unroll<RH + K - 1>([&](auto t) { x[t] = ei::ploadu<Packet>(base + t * wp + kj); });
            unroll<K>([&](auto ki) {
              const T* w = wc + (ki * K + kj) * CO;
              unroll<CO>([&](auto j) {
                const Packet wj = ei::pset1<Packet>(w[j]);
                unroll<RH>([&](auto r) { acc[r][j] = ei::pmadd(x[r + ki], wj, acc[r][j]); });
              });
            });
          });
        }
      } else {
        const T* w = wq;
        for (Index c = 0; c < s.cin; ++c) {
          const T* base = pad + c * hp * wp + oh * wp + ow;
          for (Index ki = 0; ki < k; ++ki)
            for (Index kj = 0; kj < k; ++kj, w += CO) {
              const Packet x = ei::ploadu<Packet>(base + ki * wp + kj);
              unroll<CO>([&](auto j) { acc[0][j] = ei::pmadd(x, ei::pset1<Packet>(w[j]), acc[0][j]); });
            }
        }
      }
      unroll<RH>([&](auto r) {
        unroll<CO>([&](auto j) {
          T* o = out + j * ld_out + (oh + r) * wo + ow;
          if (full) ei::pstoreu(o, acc[r][j]);
          else {
            ei::pstore(tail, acc[r][j]);
            std::copy(tail, tail + lanes, o);
          }
        });
      });
    }
}

/// All output rows of one block of CO channels: steps of direct_rows<CO, K>() rows, the rows left
/// over one at a time.
template <class T, int CO, int K>
void direct_block_rows(const DirectConvShape& s, const T* pad, const T* wq, const T* bias, bool accumulate, T* out,
                       Index ld_out) {
  constexpr int RH = direct_rows<CO, K>();
  const Index ho = s.ho(), whole = ho / RH * RH;
  if (whole > 0) direct_block_kernel<T, CO, K, RH>(s, pad, wq, bias, accumulate, out, ld_out, 0, whole);
  if constexpr (RH > 1)
    if (whole < ho) direct_block_kernel<T, CO, K, 1>(s, pad, wq, bias, accumulate, out, ld_out, whole, ho);
}

template <class T, int K>
void direct_blocks(const DirectConvShape& s, const T* pad, const T* wpack, const T* bias, bool accumulate, T* out,
                   Index ld_out) {
  const Index q_all = s.cin * s.k * s.k;
  for (Index cb = 0; cb < s.cout; cb += direct_block) {
    const Index bw = std::min(direct_block, s.cout - cb);
    const T* wq = wpack + cb * q_all;
    const T* b = bias ? bias + cb : nullptr;
    T* o = out + cb * ld_out;
    switch (bw) {
      case 8: direct_block_rows<T, 8, K>(s, pad, wq, b, accumulate, o, ld_out); break;
      case 7: direct_block_rows<T, 7, K>(s, pad, wq, b, accumulate, o, ld_out); break;
      case 6: direct_block_rows<T, 6, K>(s, pad, wq, b, accumulate, o, ld_out); break;
      case 5: direct_block_rows<T, 5, K>(s, pad, wq, b, accumulate, o, ld_out); break;
      case 4: direct_block_rows<T, 4, K>(s, pad, wq, b, accumulate, o, ld_out); break;
      case 3: direct_block_rows<T, 3, K>(s, pad, wq, b, accumulate, o, ld_out); break;
      case 2: direct_block_rows<T, 2, K>(s, pad, wq, b, accumulate, o, ld_out); break;
      default: direct_block_rows<T, 1, K>(s, pad, wq, b, accumulate, o, ld_out); break;
    }
  }
}

/// One sample: out(o, oh, ow) = [out(o, oh, ow) if accumulate] + [bias[o]] +
///   sum_{c, ki, kj} pad(c, oh + ki, ow + kj) * W(o, c, ki, kj),
/// with output plane o at out + o*ld_out (sample offset applied by the caller), `pad` written by
/// direct_pad and the weights by direct_pack. bias may be null.
template <class T>
void direct_conv_sample(const DirectConvShape& s, const T* pad, const T* wpack, const T* bias, bool accumulate, T* out,
                        Index ld_out) {
  if (s.k == 3) direct_blocks<T, 3>(s, pad, wpack, bias, accumulate, out, ld_out);
  else if (s.k == 1) direct_blocks<T, 1>(s, pad, wpack, bias, accumulate, out, ld_out);
  else direct_blocks<T, 0>(s, pad, wpack, bias, accumulate, out, ld_out);
}

/// Writes the k shifted copies of one sample's padded input planes for direct_wgrad:
/// out[((kj*C + c)*Hp + row)*Ws + col] = padded(c, row, col + kj) for col < Wo, 0 up to Ws, so that
/// every load of the weight-gradient kernel is a whole aligned packet (unaligned loads that split
/// cache lines made it load-bound at a third of the FMA rate).
template <class T>
void direct_shift(const DirectConvShape& s, const T* in, Index ld_in, T* out) {
  const Index hp = s.hp(), ws = s.template ws<T>(), wo = s.wo();
  for (Index kj = 0; kj < s.k; ++kj) {
    // input columns col + kj - pad that lie inside [0, w)
    const Index lo = std::clamp<Index>(s.pad - kj, 0, wo), hi = std::clamp<Index>(s.w + s.pad - kj, lo, wo);
    for (Index c = 0; c < s.cin; ++c)
      for (Index row = 0; row < hp; ++row) {
        T* o = out + ((kj * s.cin + c) * hp + row) * ws;
        const Index h = row - s.pad;
        if (h < 0 || h >= s.h) {
          std::fill(o, o + ws, T(0));
          continue;
        }
        const T* src = in + c * ld_in + h * s.w + kj - s.pad;
        std::fill(o, o + lo, T(0));
        std::copy(src + lo, src + hi, o + lo);
        std::fill(o + hi, o + ws, T(0));
      }
  }
}

// Not inlined: inlined into the callers' loops GCC 12 kept the accumulators in memory.
template <class T, int CO, int K, bool Tail>
[[gnu::noinline]] void direct_wgrad_block(const DirectConvShape& s, Index m, const T* xs, const T* a, Index lda, T* g, Index ldg) {
  using Packet = typename Eigen::internal::packet_traits<T>::type;
  constexpr Index L = Eigen::internal::packet_traits<T>::size;
  constexpr int KK = K * K;
  namespace ei = Eigen::internal;
  const Index hp = s.hp(), ws = s.template ws<T>(), ho = s.ho(), wo = s.wo(), stride = s.template shifted_size<T>();
  alignas(64) T tail[L];
  for (Index c = 0; c < s.cin; ++c) {
    Packet acc[CO][KK];
    unroll<CO>([&](auto j) { unroll<KK>([&](auto q) { acc[j][q] = ei::pset1<Packet>(T(0)); }); });
    if constexpr (!Tail) {  // rows are whole packets (ws == wo): one flat loop per sample
      for (Index i = 0; i < m; ++i) {
        const T* ai = a + i * ho * wo;
        const T* xi = xs + i * stride + c * hp * ws;
        for (Index e = 0; e < ho * wo; e += L) {
          Packet d[CO];
          unroll<CO>([&](auto j) { d[j] = ei::ploadu<Packet>(ai + j * lda + e); });
          unroll<K>([&](auto kj) {
            const T* base = xi + kj * s.cin * hp * ws + e;
            unroll<K>([&](auto ki) {
              const Packet x = ei::ploadu<Packet>(base + ki * ws);
              unroll<CO>([&](auto j) { acc[j][ki * K + kj] = ei::pmadd(x, d[j], acc[j][ki * K + kj]); });
            });
          });
        }
      }
    } else {
    for (Index i = 0; i < m; ++i)
      for (Index oh = 0; oh < ho; ++oh)
        for (Index ow = 0; ow < wo; ow += L) {
          Packet d[CO];
          for (int j = 0; j < CO; ++j) {
            const T* aj = a + j * lda + i * ho * wo + oh * wo + ow;
            if (ow + L <= wo) {
              d[j] = ei::ploadu<Packet>(aj);
            } else {  // lanes past the row are zero in both factors
              std::fill(tail, tail + L, T(0));
              std::copy(aj, aj + (wo - ow), tail);
              d[j] = ei::pload<Packet>(tail);
            }
          }
          unroll<K>([&](auto kj) {
            const T* base = xs + i * stride + (kj * s.cin + c) * hp * ws + oh * ws + ow;
            unroll<K>([&](auto ki) {
              const Packet x = ei::ploadu<Packet>(base + ki * ws);  // aligned when the buffer is
              unroll<CO>([&](auto j) { acc[j][ki * K + kj] = ei::pmadd(x, d[j], acc[j][ki * K + kj]); });
            });
          });
        }
    }
    unroll<CO>([&](auto j) { unroll<KK>([&](auto q) { g[c * KK + q + j * ldg] += ei::predux(acc[j][q]); }); });
  }
}

template <class T, int K, int CO, bool Tail>
void direct_wgrad_k(const DirectConvShape& s, Index m, const T* xs, const T* a, Index lda, Index channels, T* g,
                    Index ldg) {
  Index j = 0;
  for (; j + CO <= channels; j += CO) direct_wgrad_block<T, CO, K, Tail>(s, m, xs, a + j * lda, lda, g + j * ldg, ldg);
  for (; j < channels; ++j) direct_wgrad_block<T, 1, K, Tail>(s, m, xs, a + j * lda, lda, g + j * ldg, ldg);
}

template <class T, int K, int CO>
void direct_wgrad_k(const DirectConvShape& s, Index m, const T* xs, const T* a, Index lda, Index channels, T* g,
                    Index ldg) {
  // The tail branch compiled out where rows are whole packets: with it in the loop GCC kept the
  // cotangent packets in memory (3x slower).
  if (s.wo() % Eigen::internal::packet_traits<T>::size == 0) direct_wgrad_k<T, K, CO, false>(s, m, xs, a, lda, channels, g, ldg);
  else direct_wgrad_k<T, K, CO, true>(s, m, xs, a, lda, channels, g, ldg);
}

/// True when direct_wgrad handles kernels of size k.
inline bool direct_wgrad_supports(Index k) { return k == 1 || k == 3 || k == 5; }

/// Weight gradient of a stride-1 convolution over m samples, added into g: for each of `channels`
/// cotangent planes j (sample i's plane at a + j*lda + i*Ho*Wo),
///   g[q + j*ldg] += sum_{i, oh, ow} a_j(i, oh, ow) * padded_i(c, oh + ki, ow + kj),  q = (c*k + ki)*k + kj,
/// with xs holding the m samples' shifted copies (direct_shift) one after another (an aligned
/// buffer keeps every load within one cache line).
/// Needs direct_wgrad_supports(s.k). The vector accumulators span all m samples; one horizontal
/// sum per weight and call.
template <class T>
void direct_wgrad(const DirectConvShape& s, Index m, const T* xs, const T* a, Index lda, Index channels, T* g,
                  Index ldg) {
  if (s.k == 3) direct_wgrad_k<T, 3, 2>(s, m, xs, a, lda, channels, g, ldg);
  else if (s.k == 1) direct_wgrad_k<T, 1, 8>(s, m, xs, a, lda, channels, g, ldg);
  else direct_wgrad_k<T, 5, 1>(s, m, xs, a, lda, channels, g, ldg);
}

/// Lanes of the kernel's vectors for T.
template <class T>
constexpr Index direct_lanes() {
  return Eigen::internal::packet_traits<T>::size;
}

}  // namespace curvature::nn::detail
