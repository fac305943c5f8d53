// CPU kernels of Conv-TasNet's frames-last formulation (src/model/cpu_kernels.py loads them as
// MindSpore "aot" Custom operators). Each fuses one chain of a convolutional block into two passes
// over the tensor: the first computes the chain and the utterance's sum and sum of squares, the
// second applies gLN. Tensors are frames last, [batch, K, H], row-major; gLN's statistics are per
// utterance over K and H, accumulated in double.
//
//   GlobalNorm(x, gamma, beta)                               -> gLN(x)
//   PReLUNorm(u, a, gamma, beta)                             -> gLN(PReLU_a(u))
//   DepthwisePReLUNorm(v, taps, bias, meta, a, gamma, beta)  -> gLN(PReLU_a(dconv(v) + bias))
//
// taps [P, H] (tap p reads frame k + p * dilation - pad_before; zeros outside 0..K-1);
// meta float32 [2] = (dilation, pad_before); a [1]; gamma, beta, bias [H]. Single-threaded:
// inside MindSpore's CPU runtime a second thread of ours competes with its own, and the kernels
// get slower (benchmarks/README.md).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr double kEps = 1e-8;

struct Sums {
  double s = 0, ss = 0;
};

// Adds a frame's (H values) sum and sum of squares to `acc`, in double: gLN's variance is
// E[x^2] - E[x]^2, which float sums would spoil when the mean is large against the deviation.
inline void add_row_sums(const float *row, int64_t H, Sums *acc) {
  double s = 0, ss = 0;
#pragma omp simd reduction(+ : s, ss)
  for (int64_t h = 0; h < H; ++h) {
    const double x = row[h];
    s += x;
    ss += x * x;
  }
  acc->s += s;
  acc->ss += ss;
}

// out[k, h] = out[k, h] * gamma[h] * rstd + beta[h] - mean * gamma[h] * rstd, over frames 0..K-1.
void apply_norm(float *out, const Sums &total, const float *gamma, const float *beta, int64_t K,
                int64_t H) {
  const double n = static_cast<double>(K) * H;
  const double mean = total.s / n;
  double var = total.ss / n - mean * mean;
  if (var < 0) var = 0;
  const double rstd = 1.0 / std::sqrt(var + kEps);
  std::vector<float> scale(H), shift(H);
  for (int64_t h = 0; h < H; ++h) {
    scale[h] = static_cast<float>(gamma[h] * rstd);
    shift[h] = static_cast<float>(beta[h] - mean * gamma[h] * rstd);
  }
  const float *sc = scale.data(), *sh = shift.data();
  for (int64_t k = 0; k < K; ++k) {
    float *row = out + k * H;
#pragma omp simd
    for (int64_t h = 0; h < H; ++h) row[h] = row[h] * sc[h] + sh[h];
  }
}

// out = gLN(PReLU_a(u)) for one utterance u [K, H].
void prelu_norm(const float *u, float a, const float *gamma, const float *beta, float *out,
                int64_t K, int64_t H) {
  Sums sums;
  for (int64_t k = 0; k < K; ++k) {
    const float *in = u + k * H;
    float *row = out + k * H;
#pragma omp simd
    for (int64_t h = 0; h < H; ++h) row[h] = in[h] > 0 ? in[h] : a * in[h];
    add_row_sums(row, H, &sums);
  }
  apply_norm(out, sums, gamma, beta, K, H);
}

// out = gLN(PReLU_a(depthwise(v) + bias)) for one utterance v [K, H].
void depthwise_prelu_norm(const float *v, const float *taps, int64_t P, int64_t dilation,
                          int64_t before, const float *bias, float a, const float *gamma,
                          const float *beta, float *out, int64_t K, int64_t H) {
  Sums sums;
  for (int64_t k = 0; k < K; ++k) {
    float *row = out + k * H;
    std::memcpy(row, bias, H * sizeof(float));
    for (int64_t p = 0; p < P; ++p) {
      const int64_t src = k + p * dilation - before;
      if (src < 0 || src >= K) continue;
      const float *in = v + src * H, *tap = taps + p * H;
#pragma omp simd
      for (int64_t h = 0; h < H; ++h) row[h] += tap[h] * in[h];
    }
#pragma omp simd
    for (int64_t h = 0; h < H; ++h) row[h] = row[h] > 0 ? row[h] : a * row[h];
    add_row_sums(row, H, &sums);
  }
  apply_norm(out, sums, gamma, beta, K, H);
}

template <typename T>
T *arg(void **params, int i) {
  return static_cast<T *>(params[i]);
}

std::vector<int64_t> first_input_shape(int *ndims, int64_t **shapes) {
  return std::vector<int64_t>(shapes[0], shapes[0] + ndims[0]);
}

}  // namespace

extern "C" {

int GlobalNorm(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
               void *stream, void *extra) {
  const int64_t batch = shapes[0][0], K = shapes[0][1], H = shapes[0][2];
  for (int64_t b = 0; b < batch; ++b)
    prelu_norm(arg<float>(params, 0) + b * K * H, 1.0f, arg<float>(params, 1),
               arg<float>(params, 2), arg<float>(params, 3) + b * K * H, K, H);
  return 0;
}

int PReLUNorm(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
              void *stream, void *extra) {
  const int64_t batch = shapes[0][0], K = shapes[0][1], H = shapes[0][2];
  for (int64_t b = 0; b < batch; ++b)
    prelu_norm(arg<float>(params, 0) + b * K * H, *arg<float>(params, 1), arg<float>(params, 2),
               arg<float>(params, 3), arg<float>(params, 4) + b * K * H, K, H);
  return 0;
}

int DepthwisePReLUNorm(int nparam, void **params, int *ndims, int64_t **shapes,
                       const char **dtypes, void *stream, void *extra) {
  const int64_t batch = shapes[0][0], K = shapes[0][1], H = shapes[0][2];
  const float *meta = arg<float>(params, 3);
  for (int64_t b = 0; b < batch; ++b)
    depthwise_prelu_norm(arg<float>(params, 0) + b * K * H, arg<float>(params, 1), shapes[1][0],
                         static_cast<int64_t>(meta[0]), static_cast<int64_t>(meta[1]),
                         arg<float>(params, 2), *arg<float>(params, 4), arg<float>(params, 5),
                         arg<float>(params, 6), arg<float>(params, 7) + b * K * H, K, H);
  return 0;
}

// Output shapes (MindSpore calls <name>InferShape when a Custom op is given no out_shape): the
// shape of the first input, for any K.
std::vector<int64_t> GlobalNormInferShape(int *ndims, int64_t **shapes, void *extra) {
  return first_input_shape(ndims, shapes);
}
std::vector<int64_t> PReLUNormInferShape(int *ndims, int64_t **shapes, void *extra) {
  return first_input_shape(ndims, shapes);
}
std::vector<int64_t> DepthwisePReLUNormInferShape(int *ndims, int64_t **shapes, void *extra) {
  return first_input_shape(ndims, shapes);
}

}  // extern "C"
