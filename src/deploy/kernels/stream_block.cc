// The elementwise work of one convolutional block of the streaming separator
// (src/deploy/streaming.py), frames last: [M, H] float32, row m = frame m of the hop.
// numpy runs each elementwise operation as a pass of its own with its own call overhead (about
// 25 per block), and BLAS repacks each weight at every call; stream_block runs a whole block
// (its two matrix products against weights packed once, PReLUs, cumulative layer norms,
// depthwise convolution, residual and skip sums) in one call.
//
// cLN statistics as in the offline model: per frame the sum and sum of squares over the channels,
// accumulated over all frames so far in double (`sums` = {sum, sum of squares}, carried between
// calls), count = frames so far * channels, var = E[x^2] - E[x]^2 (not below 0), eps 1e-8.
#include <cmath>
#include <cstdint>

namespace {

constexpr double kEps = 1e-8;

// In place on x [M, C]: x = prelu(x + bias), then cLN with the running sums.
void PreluNorm(float *x, int64_t M, int64_t C, const float *bias, const float *slope,
               int64_t slopes, const float *gamma, const float *beta, double *sums,
               int64_t frames_before) {
  for (int64_t m = 0; m < M; ++m) {
    float *row = x + m * C;
    double sum = 0.0, pow = 0.0;
#pragma omp simd reduction(+ : sum, pow)
    for (int64_t c = 0; c < C; ++c) {
      float v = bias ? row[c] + bias[c] : row[c];
      float a = slope[slopes == 1 ? 0 : c];
      v = v >= 0.0f ? v : v * a;
      row[c] = v;
      sum += v;
      pow += static_cast<double>(v) * v;
    }
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
constexpr int64_t kPanel = 16;

// acc[MR][kPanel] = x[MR rows, K] @ panel [K, kPanel]; then store(row, column, value).
template <int MR, typename Store>
inline void PanelRows(const float *x, int64_t K, const float *panel, Store store) {
  float acc[MR][kPanel] = {};
  for (int64_t k = 0; k < K; ++k) {
    const float *w = panel + k * kPanel;
    for (int r = 0; r < MR; ++r) {
      const float a = x[r * K + k];
#pragma omp simd
      for (int64_t j = 0; j < kPanel; ++j) acc[r][j] += a * w[j];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int64_t j = 0; j < kPanel; ++j) store(r, j, acc[r][j]);
}

// out = x [M, K] @ W [K, N] (W packed as above), store(m, n, value) for n < N.
template <typename Store>
void PackedProduct(const float *x, int64_t M, int64_t K, const float *wp, int64_t N,
                   Store store) {
  constexpr int kRows = 6;
  for (int64_t p = 0; p * kPanel < N; ++p) {
    const float *panel = wp + p * K * kPanel;
    const int64_t n0 = p * kPanel, width = N - n0 < kPanel ? N - n0 : kPanel;
    auto at = [&](int64_t m0) {
      return [&, m0](int r, int64_t j, float v) {
        if (j < width) store(m0 + r, n0 + j, v);
      };
    };
    int64_t m = 0;
    for (; m + kRows <= M; m += kRows) PanelRows<kRows>(x + m * K, K, panel, at(m));
    switch (M - m) {
      case 5: PanelRows<5>(x + m * K, K, panel, at(m)); break;
      case 4: PanelRows<4>(x + m * K, K, panel, at(m)); break;
      case 3: PanelRows<3>(x + m * K, K, panel, at(m)); break;
      case 2: PanelRows<2>(x + m * K, K, panel, at(m)); break;
      case 1: PanelRows<1>(x + m * K, K, panel, at(m)); break;
      default: break;
    }
  }
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
  PackedProduct(x, M, B, b->w1, H, [&](int64_t m, int64_t n, float value) {
    u[m * H + n] = value;
  });
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
  PackedProduct(v, M, H, b->w_out, B + Sc, [&](int64_t m, int64_t n, float value) {
    if (n < B)
      x[m * B + n] += value + b_out[n];
    else
      skip[m * Sc + n - B] += value + b_out[n];
  });
}

}  // extern "C"
