/**
 * The hop loop of the streaming mode: a signal through a streaming step (export.py --stream=true)
 * hop by hop, each call's state outputs fed back as the next call's state inputs.
 *
 * The step takes (hop samples, state) and gives (estimates [C, hop], new state); the state
 * starts as zeros (bytes of each state tensor). A signal of T samples takes
 * ceil((T + delay) / hop) hops, zeros after its end; its estimates [C, T] are the hops' outputs
 * from sample `delay` on (the look-ahead of the model; the sidecar's delay_samples).
 */
#ifndef CONV_TASNET_ASCEND310_INFER_INC_STREAM_H_
#define CONV_TASNET_ASCEND310_INFER_INC_STREAM_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

// step(const std::vector<float> &hop_samples, std::vector<std::vector<uint8_t>> *state,
//      std::vector<float> *estimates [C * hop], std::string *error) -> bool, replacing *state
// with the new state. Fills *estimates with [C, T] (row-major); false with a message in *error.
template <typename Step>
bool StreamSignal(const std::vector<float> &samples, size_t hop, size_t delay, size_t n_src,
                  std::vector<std::vector<uint8_t>> state, Step step,
                  std::vector<float> *estimates, std::string *error) {
  const size_t length = samples.size();
  const size_t hops = (length + delay + hop - 1) / hop;
  const size_t total = hops * hop;
  std::vector<float> all(n_src * total, 0.0f);
  std::vector<float> chunk(hop), out;
  for (size_t k = 0; k < hops; ++k) {
    std::fill(chunk.begin(), chunk.end(), 0.0f);
    for (size_t i = 0; i < hop && k * hop + i < length; ++i) chunk[i] = samples[k * hop + i];
    if (!step(chunk, &state, &out, error)) return false;
    if (out.size() != n_src * hop) {
      *error = "the step gave " + std::to_string(out.size()) + " estimates, expected " +
               std::to_string(n_src * hop);
      return false;
    }
    for (size_t c = 0; c < n_src; ++c) {
      std::copy(out.begin() + c * hop, out.begin() + (c + 1) * hop,
                all.begin() + c * total + k * hop);
    }
  }
  estimates->assign(n_src * length, 0.0f);
  for (size_t c = 0; c < n_src; ++c) {
    std::copy(all.begin() + c * total + delay, all.begin() + c * total + delay + length,
              estimates->begin() + c * length);
  }
  return true;
}

#endif  // CONV_TASNET_ASCEND310_INFER_INC_STREAM_H_
