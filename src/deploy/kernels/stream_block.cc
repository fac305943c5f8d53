// The elementwise work of one convolutional block of the streaming separator
// (src/deploy/streaming.py), frames last: x [M, H] float32, row m = frame m of the hop.
// numpy runs each elementwise operation as a pass of its own with its own call overhead; these
// two functions do a block's PReLU, cumulative layer norms and depthwise convolution in one pass
// each, and the separator keeps numpy (BLAS) for the matrix products.
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
    float std_f = static_cast<float>(std::sqrt((var > 0.0 ? var : 0.0) + kEps));
    for (int64_t c = 0; c < C; ++c) row[c] = (row[c] - mean_f) / std_f * gamma[c] + beta[c];
  }
}

}  // namespace

extern "C" {

// x [M, C] in place: prelu(x + bias) then cLN (bias may be null; slopes: 1 or C values).
void stream_prelu_norm(float *x, int64_t M, int64_t C, const float *bias, const float *slope,
                       int64_t slopes, const float *gamma, const float *beta, double *sums,
                       int64_t frames_before) {
  PreluNorm(x, M, C, bias, slope, slopes, gamma, beta, sums, frames_before);
}

// The causal dilated depthwise convolution of the hop's frames u [M, H] into v [M, H], reading
// the last D = (P-1)*dilation frames from the ring `history` [D, H] (oldest at *start) and
// writing the hop's frames into it; then prelu(v) and cLN in place on v.
// taps [P, H] (tap P-1 reads the current frame), dbias [H].
void stream_depthwise_prelu_norm(const float *u, float *v, int64_t M, int64_t H, int64_t P,
                                 int64_t dilation, const float *taps, const float *dbias,
                                 float *history, int64_t *start, const float *slope,
                                 int64_t slopes, const float *gamma, const float *beta,
                                 double *sums, int64_t frames_before) {
  const int64_t D = (P - 1) * dilation;
  for (int64_t m = 0; m < M; ++m) {
    float *out = v + m * H;
    const float *last = taps + (P - 1) * H;
    const float *cur = u + m * H;
    for (int64_t h = 0; h < H; ++h) out[h] = cur[h] * last[h] + dbias[h];
    for (int64_t j = 0; j < P - 1; ++j) {
      // frame m reads frame j*d + m of [history, u]
      int64_t k = j * dilation + m;
      const float *src = k < D ? history + ((*start + k) % D) * H : u + (k - D) * H;
      const float *tap = taps + j * H;
      for (int64_t h = 0; h < H; ++h) out[h] += src[h] * tap[h];
    }
  }
  if (D > 0) {
    if (M >= D) {
      for (int64_t i = 0; i < D * H; ++i) history[i] = u[(M - D) * H + i];
      *start = 0;
    } else {
      for (int64_t m = 0; m < M; ++m) {
        float *dst = history + ((*start + m) % D) * H;
        const float *src = u + m * H;
        for (int64_t h = 0; h < H; ++h) dst[h] = src[h];
      }
      *start = (*start + M) % D;
    }
  }
  PreluNorm(v, M, H, nullptr, slope, slopes, gamma, beta, sums, frames_before);
}

}  // extern "C"
