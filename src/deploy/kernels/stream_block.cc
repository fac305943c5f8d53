// The elementwise work of one convolutional block of the streaming separator
// (src/deploy/streaming.py), frames last: [M, H] float32, row m = frame m of the hop.
// numpy runs each elementwise operation as a pass of its own with its own call overhead (about
// 25 per block), and BLAS repacks each weight at every call; stream_block runs a whole block
// (its two matrix products against weights packed once, PReLUs, cumulative layer norms,
// depthwise convolution, residual and skip sums) in one call.
//
// cLN statistics as in the offline model: per frame the sum and sum of squares over the channels
// (float32), accumulated over all frames so far in double (`sums` = {sum, sum of squares},
// carried between calls), count = frames so far * channels, var = E[x^2] - E[x]^2 (not below 0),
// eps 1e-8.
#include <cmath>
#include <cstdint>
#include <vector>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

constexpr double kEps = 1e-8;

// x = prelu(x + bias) on one row of C values (bias may be null; slopes: 1 shared or C);
// returns the row's sum and sum of squares (float, summed in vector lanes, as numpy's
// float32 reductions).
template <bool kBias, bool kShared>
inline void PreluRow(float *row, int64_t C, const float *bias, const float *slope, float *sum,
                     float *pow) {
  float s = 0.0f, q = 0.0f;
  const float shared = slope[0];
#pragma omp simd reduction(+ : s, q)
  for (int64_t c = 0; c < C; ++c) {
    float v = kBias ? row[c] + bias[c] : row[c];
    const float a = kShared ? shared : slope[c];
    v = v >= 0.0f ? v : v * a;
    row[c] = v;
    s += v;
    q += v * v;
  }
  *sum = s;
  *pow = q;
}

// In place on x [M, C]: x = prelu(x + bias), then cLN with the running sums.
void PreluNorm(float *x, int64_t M, int64_t C, const float *bias, const float *slope,
               int64_t slopes, const float *gamma, const float *beta, double *sums,
               int64_t frames_before) {
  for (int64_t m = 0; m < M; ++m) {
    float *row = x + m * C;
    float sum, pow;
    if (bias)
      slopes == 1 ? PreluRow<true, true>(row, C, bias, slope, &sum, &pow)
                  : PreluRow<true, false>(row, C, bias, slope, &sum, &pow);
    else
      slopes == 1 ? PreluRow<false, true>(row, C, bias, slope, &sum, &pow)
                  : PreluRow<false, false>(row, C, bias, slope, &sum, &pow);
    sums[0] += sum;
    sums[1] += pow;
    double count = static_cast<double>(frames_before + m + 1) * C;
    double mean = sums[0] / count;
    double var = sums[1] / count - mean * mean;
    float mean_f = static_cast<float>(mean);
    float inv_std = 1.0f / static_cast<float>(std::sqrt((var > 0.0 ? var : 0.0) + kEps));
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) row[c] = (row[c] - mean_f) * inv_std * gamma[c] + beta[c];
  }
}


// Matrix products for few rows (a hop's frames) against a weight packed once into panels of
// kPanel columns: wp[p][k][j] = W[k][p*kPanel + j], zero past the last column. BLAS packs the
// weight again at every call, which costs more than the product when the hop has few frames.
// t [M, ldt] = x [M, K] @ W, ldt = the panels' columns (N rounded up to kPanel).
constexpr int64_t kPanel = 16;
constexpr int64_t kPrefetch = 1024;  // floats

#if defined(__AVX512F__)
// t[r][p*16 ..] for r < MR, p < NP: MR rows of x against NP adjacent panels; MR*NP
// accumulators stay in registers (each weight vector is loaded once for the MR rows, each
// x value broadcast once for the NP panels).
template <int MR, int NP>
inline void Tile(const float *x, int64_t K, const float *panel, float *t, int64_t ldt) {
  __m512 acc[MR][NP];
  for (int r = 0; r < MR; ++r)
    for (int p = 0; p < NP; ++p) acc[r][p] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m512 w[NP];
    for (int p = 0; p < NP; ++p) {
      const float *at = panel + (p * K + k) * kPanel;
      w[p] = _mm512_loadu_ps(at);
      // The weights come from L3 or memory (a block's do not stay in L2 between hops): ask
      // for them 4 KB ahead.
      _mm_prefetch(reinterpret_cast<const char *>(at + kPrefetch), _MM_HINT_T0);
    }
    for (int r = 0; r < MR; ++r) {
      const __m512 a = _mm512_set1_ps(x[r * K + k]);
      for (int p = 0; p < NP; ++p) acc[r][p] = _mm512_fmadd_ps(a, w[p], acc[r][p]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int p = 0; p < NP; ++p) _mm512_storeu_ps(t + r * ldt + p * kPanel, acc[r][p]);
}
#else
template <int MR, int NP>
inline void Tile(const float *x, int64_t K, const float *panel, float *t, int64_t ldt) {
  for (int p = 0; p < NP; ++p) {
    float acc[MR][kPanel] = {};
    const float *w0 = panel + p * K * kPanel;
    for (int64_t k = 0; k < K; ++k) {
      const float *w = w0 + k * kPanel;
      for (int r = 0; r < MR; ++r) {
        const float a = x[r * K + k];
#pragma omp simd
        for (int64_t j = 0; j < kPanel; ++j) acc[r][j] += a * w[j];
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int64_t j = 0; j < kPanel; ++j) t[r * ldt + p * kPanel + j] = acc[r][j];
  }
}
#endif

// All rows of x against NP panels starting at `panel`: tiles of kRows rows, then the rest.
template <int NP>
void PanelColumns(const float *x, int64_t M, int64_t K, const float *panel, float *t,
                  int64_t ldt) {
  constexpr int kRows = 8;
  int64_t m = 0;
  for (; m + kRows <= M; m += kRows) Tile<kRows, NP>(x + m * K, K, panel, t + m * ldt, ldt);
  const float *xr = x + m * K;
  float *tr = t + m * ldt;
  switch (M - m) {
    case 7: Tile<7, NP>(xr, K, panel, tr, ldt); break;
    case 6: Tile<6, NP>(xr, K, panel, tr, ldt); break;
    case 5: Tile<5, NP>(xr, K, panel, tr, ldt); break;
    case 4: Tile<4, NP>(xr, K, panel, tr, ldt); break;
    case 3: Tile<3, NP>(xr, K, panel, tr, ldt); break;
    case 2: Tile<2, NP>(xr, K, panel, tr, ldt); break;
    case 1: Tile<1, NP>(xr, K, panel, tr, ldt); break;
    default: break;
  }
}

// t [M, ldt] = x [M, K] @ W [K, N] (W packed as above, ldt = panels * kPanel).
void PackedProduct(const float *x, int64_t M, int64_t K, const float *wp, int64_t N, float *t) {
  const int64_t panels = (N + kPanel - 1) / kPanel, ldt = panels * kPanel;
  int64_t p = 0;
  for (; p + 2 <= panels; p += 2)
    PanelColumns<2>(x, M, K, wp + p * K * kPanel, t + p * kPanel, ldt);
  if (p < panels) PanelColumns<1>(x, M, K, wp + p * K * kPanel, t + p * kPanel, ldt);
}

// A scratch buffer of at least n floats, kept between calls (one per thread).
float *Scratch(int64_t n) {
  thread_local std::vector<float> buffer;
  if (static_cast<int64_t>(buffer.size()) < n) buffer.resize(n);
  return buffer.data();
}

}  // namespace

extern "C" {

// A block's weights and carried state (pointers into the separator's arrays, set once).
struct StreamBlock {
  int64_t B, H, Sc, P, dilation;
  const float *w1;                   // conv1x1 [B -> H], packed
  const float *bias1, *slope1;       // its bias [H], PReLU slope [slopes1]
  int64_t slopes1;
  const float *gamma1, *beta1;       // norm1 [H]
  double *sums1;                     // norm1's running sum and sum of squares
  const float *taps, *dbias;         // depthwise [P, H] (tap P-1 reads the current frame), [H]
  float *history;                    // the last D = (P-1)*dilation frames [D, H], a ring
  int64_t start;                     // its oldest row
  const float *slope2;               // PReLU slope [slopes2]
  int64_t slopes2;
  const float *gamma2, *beta2;       // norm2 [H]
  double *sums2;
  const float *w_out, *b_out;        // residual and skip convolutions [H -> B + Sc], packed; bias
};

// One block on the hop's M frames: x [M, B] += residual, skip [M, Sc] += skip (when Sc > 0).
// u, v: scratch [M, H]. u = cLN1(prelu1(x @ w1 + bias1)); v = cLN2(prelu2(depthwise(u))), the
// depthwise convolution reading the history ring and writing the hop's frames into it;
// [residual, skip] = v @ w_out + b_out.
void stream_block(StreamBlock *b, float *x, float *skip, float *u, float *v, int64_t M,
                  int64_t frames_before) {
  const int64_t B = b->B, H = b->H, Sc = b->Sc, P = b->P, D = (P - 1) * b->dilation;
  const int64_t ld1 = (H + kPanel - 1) / kPanel * kPanel;
  if (ld1 == H) {
    PackedProduct(x, M, B, b->w1, H, u);
  } else {
    float *t = Scratch(M * ld1);
    PackedProduct(x, M, B, b->w1, H, t);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t h = 0; h < H; ++h) u[m * H + h] = t[m * ld1 + h];
  }
  PreluNorm(u, M, H, b->bias1, b->slope1, b->slopes1, b->gamma1, b->beta1, b->sums1,
            frames_before);
  const float *last = b->taps + (P - 1) * H;
  for (int64_t m = 0; m < M; ++m) {
    float *out = v + m * H;
    const float *cur = u + m * H;
#pragma omp simd
    for (int64_t h = 0; h < H; ++h) out[h] = cur[h] * last[h] + b->dbias[h];
    for (int64_t j = 0; j < P - 1; ++j) {
      // frame m reads frame j*d + m of [history, u]
      int64_t k = j * b->dilation + m;
      const float *src = k < D ? b->history + ((b->start + k) % D) * H : u + (k - D) * H;
      const float *tap = b->taps + j * H;
#pragma omp simd
      for (int64_t h = 0; h < H; ++h) out[h] += src[h] * tap[h];
    }
  }
  if (D > 0) {
    if (M >= D) {
      for (int64_t i = 0; i < D * H; ++i) b->history[i] = u[(M - D) * H + i];
      b->start = 0;
    } else {
      for (int64_t m = 0; m < M; ++m) {
        float *dst = b->history + ((b->start + m) % D) * H;
        for (int64_t h = 0; h < H; ++h) dst[h] = u[m * H + h];
      }
      b->start = (b->start + M) % D;
    }
  }
  PreluNorm(v, M, H, nullptr, b->slope2, b->slopes2, b->gamma2, b->beta2, b->sums2,
            frames_before);
  const float *b_out = b->b_out;
  const int64_t ld2 = (B + Sc + kPanel - 1) / kPanel * kPanel;
  float *t = Scratch(M * ld2);
  PackedProduct(v, M, H, b->w_out, B + Sc, t);
  for (int64_t m = 0; m < M; ++m) {
    const float *row = t + m * ld2;
    float *xm = x + m * B, *sm = skip + m * Sc;
#pragma omp simd
    for (int64_t n = 0; n < B; ++n) xm[n] += row[n] + b_out[n];
#pragma omp simd
    for (int64_t n = 0; n < Sc; ++n) sm[n] += row[B + n] + b_out[B + n];
  }
}

// The blocks blocks[0 .. count) in turn on the same hop (one call from Python per hop).
void stream_blocks(StreamBlock *blocks, int64_t count, float *x, float *skip, float *u, float *v,
                   int64_t M, int64_t frames_before) {
  for (int64_t i = 0; i < count; ++i) stream_block(blocks + i, x, skip, u, v, M, frames_before);
}

// out [M, N] = x [M, K] @ W + bias, W [K, N] packed as above (the separator's bottleneck and
// mask convolutions).
void stream_product(const float *x, int64_t M, int64_t K, const float *wp, int64_t N,
                    const float *bias, float *out) {
  const int64_t ld = (N + kPanel - 1) / kPanel * kPanel;
  float *t = Scratch(M * ld);
  PackedProduct(x, M, K, wp, N, t);
  for (int64_t m = 0; m < M; ++m) {
#pragma omp simd
    for (int64_t n = 0; n < N; ++n) out[m * N + n] = t[m * ld + n] + bias[n];
  }
}

}  // extern "C"
