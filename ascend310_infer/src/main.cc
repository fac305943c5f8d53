/**
 * Conv-TasNet inference on Ascend 310 with MindSpore's C++ API.
 *
 *   main --mindir_path=conv_tasnet.mindir --input_path=<folder of .bin> --output_path=<folder>
 *        [--device_id=0] [--stream=true --stream_delay=<samples>]
 *
 * Every input file is one mixture [1, T] of float32 (T from the file size). A MINDIR exported
 * with a dynamic time axis is resized to each T; one exported with a fixed length takes only
 * inputs of that length (preprocess_310.py cuts and pads them so). For input <name>.bin the app
 * writes <name>_<k>.bin for each model output k ([1, C, T] float32) and one line
 * "<name>,<milliseconds>" to time_per_input.csv in the output folder.
 *
 * --stream=true: the model is a streaming step (export.py --stream=true): input 0 takes one hop
 * [1, hop], the others the state; output 0 gives the hop's estimates [1, C, hop], the others the
 * new state. Each input file is streamed through it hop by hop from a zero state, the state
 * outputs fed back as inputs (inc/stream.h), and <name>_0.bin gets the estimates [1, C, T], the
 * first --stream_delay samples (the sidecar's delay_samples) cut.
 */
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "include/api/context.h"
#include "include/api/model.h"
#include "include/api/serialization.h"
#include "include/api/types.h"
#include "inc/stream.h"
#include "inc/utils.h"

using mindspore::AscendDeviceInfo;
using mindspore::Context;
using mindspore::Graph;
using mindspore::GraphCell;
using mindspore::kSuccess;
using mindspore::Model;
using mindspore::ModelType;
using mindspore::MSTensor;
using mindspore::Serialization;
using mindspore::Status;

namespace {

int Fail(const std::string &message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  return 1;
}

std::string ShapeText(const std::vector<int64_t> &shape) {
  std::ostringstream text;
  text << "[";
  for (size_t i = 0; i < shape.size(); ++i) text << (i ? ", " : "") << shape[i];
  text << "]";
  return text.str();
}

// Streams every file through the streaming step `model` (the file comment): results as the
// offline mode writes them. Returns the exit status.
int StreamFiles(Model *model, const Options &options, const std::vector<std::string> &files) {
  std::string error;
  const std::vector<MSTensor> inputs = model->GetInputs();
  const std::vector<MSTensor> model_outputs = model->GetOutputs();
  if (inputs.size() < 2 || model_outputs.size() != inputs.size()) {
    return Fail(options.mindir_path + ": not a streaming step (expected the samples and the " +
                "state as inputs, the estimates and the new state as outputs)");
  }
  const std::vector<int64_t> hop_shape = inputs[0].Shape();
  const std::vector<int64_t> out_shape = model_outputs[0].Shape();
  if (hop_shape.size() != 2 || hop_shape[1] < 1 || out_shape.size() != 3 ||
      out_shape[2] != hop_shape[1]) {
    return Fail(options.mindir_path + ": expected a hop input [1, hop] and estimates " +
                "[1, C, hop], found " + ShapeText(hop_shape) + " and " + ShapeText(out_shape));
  }
  const size_t hop = static_cast<size_t>(hop_shape[1]);
  const size_t n_src = static_cast<size_t>(out_shape[1]);
  std::vector<std::vector<uint8_t>> zeros;
  for (size_t i = 1; i < inputs.size(); ++i) {
    zeros.emplace_back(inputs[i].DataSize(), 0);
  }
  auto step = [&](const std::vector<float> &chunk, std::vector<std::vector<uint8_t>> *state,
                  std::vector<float> *estimates, std::string *message) {
    std::vector<MSTensor> feed;
    feed.emplace_back(inputs[0].Name(), inputs[0].DataType(), hop_shape, chunk.data(),
                      chunk.size() * sizeof(float));
    for (size_t i = 1; i < inputs.size(); ++i) {
      feed.emplace_back(inputs[i].Name(), inputs[i].DataType(), inputs[i].Shape(),
                        (*state)[i - 1].data(), (*state)[i - 1].size());
    }
    std::vector<MSTensor> outputs;
    Status status = model->Predict(feed, &outputs);
    if (status != kSuccess) {
      *message = "inference failed: " + status.ToString();
      return false;
    }
    if (outputs.size() != inputs.size()) {
      *message = "the step gave " + std::to_string(outputs.size()) + " outputs, expected " +
                 std::to_string(inputs.size());
      return false;
    }
    for (size_t i = 1; i < outputs.size(); ++i) {
      if (outputs[i].DataSize() != (*state)[i - 1].size()) {
        *message = "state output " + std::to_string(i) + " has " +
                   std::to_string(outputs[i].DataSize()) + " bytes, its input " +
                   std::to_string((*state)[i - 1].size());
        return false;
      }
      std::shared_ptr<const void> data = outputs[i].Data();
      const uint8_t *bytes = static_cast<const uint8_t *>(data.get());
      (*state)[i - 1].assign(bytes, bytes + outputs[i].DataSize());
    }
    std::shared_ptr<const void> data = outputs[0].Data();
    const float *values = static_cast<const float *>(data.get());
    estimates->assign(values, values + outputs[0].DataSize() / sizeof(float));
    return true;
  };

  std::ostringstream timing;
  double total_ms = 0.0;
  for (const std::string &file : files) {
    std::vector<float> samples, estimates;
    if (!ReadFloatFile(file, &samples, &error)) return Fail(error);
    auto start = std::chrono::steady_clock::now();
    if (!StreamSignal(samples, hop, static_cast<size_t>(options.stream_delay), n_src, zeros,
                      step, &estimates, &error)) {
      return Fail(file + ": " + error);
    }
    auto end = std::chrono::steady_clock::now();
    const double ms = std::chrono::duration<double, std::milli>(end - start).count();
    total_ms += ms;
    const std::string out = JoinPath(options.output_path, Stem(file) + "_0.bin");
    if (!WriteFileAtomic(out, estimates.data(), estimates.size() * sizeof(float), &error)) {
      return Fail(error);
    }
    timing << Stem(file) << "," << ms << "\n";
  }
  const std::string text = timing.str();
  if (!WriteFileAtomic(JoinPath(options.output_path, "time_per_input.csv"), text.data(),
                       text.size(), &error)) {
    return Fail(error);
  }
  std::printf("streamed %zu inputs in hops of %zu samples, average %.3f ms per input\n",
              files.size(), hop, total_ms / static_cast<double>(files.size()));
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  Options options;
  std::string error;
  if (!ParseOptions(argc, argv, &options, &error)) return Fail(error);
  std::vector<std::string> files;
  if (!ListBinFiles(options.input_path, &files, &error)) return Fail(error);
  if (files.empty()) return Fail(options.input_path + ": no .bin input files");
  if (!MakeDirs(options.output_path, &error)) return Fail(error);

  auto context = std::make_shared<Context>();
  auto ascend = std::make_shared<AscendDeviceInfo>();
  ascend->SetDeviceID(static_cast<uint32_t>(options.device_id));
  context->MutableDeviceInfo().push_back(ascend);

  Graph graph;
  Status status = Serialization::Load(options.mindir_path, ModelType::kMindIR, &graph);
  if (status != kSuccess) return Fail(options.mindir_path + ": load failed: " + status.ToString());
  Model model;
  status = model.Build(GraphCell(graph), context);
  if (status != kSuccess) return Fail(options.mindir_path + ": build failed: " + status.ToString());
  if (options.stream) return StreamFiles(&model, options, files);

  std::vector<MSTensor> model_inputs = model.GetInputs();
  if (model_inputs.size() != 1) {
    return Fail(options.mindir_path + ": expected a model with one input, found " +
                std::to_string(model_inputs.size()));
  }
  const std::vector<int64_t> declared = model_inputs[0].Shape();
  if (declared.size() != 2) {
    return Fail(options.mindir_path + ": expected an input [1, T], found " + ShapeText(declared));
  }
  const bool dynamic = declared[1] < 0;
  std::vector<int64_t> current = declared;

  std::ostringstream timing;
  double total_ms = 0.0;
  for (const std::string &file : files) {
    std::vector<float> samples;
    if (!ReadFloatFile(file, &samples, &error)) return Fail(error);
    const std::vector<int64_t> shape = {1, static_cast<int64_t>(samples.size())};
    if (!dynamic && shape != declared) {
      return Fail(file + ": " + std::to_string(samples.size()) + " samples, but the model takes " +
                  ShapeText(declared) + " (run the preprocess step for this model)");
    }
    if (dynamic && shape != current) {
      status = model.Resize(model_inputs, {shape});
      if (status != kSuccess) {
        return Fail(file + ": resizing the model input to " + ShapeText(shape) +
                    " failed: " + status.ToString() +
                    " (export with a fixed --input_length for this runtime)");
      }
      model_inputs = model.GetInputs();
      current = shape;
    }
    std::vector<MSTensor> inputs;
    inputs.emplace_back(model_inputs[0].Name(), model_inputs[0].DataType(), shape, samples.data(),
                        samples.size() * sizeof(float));
    std::vector<MSTensor> outputs;
    auto start = std::chrono::steady_clock::now();
    status = model.Predict(inputs, &outputs);
    auto end = std::chrono::steady_clock::now();
    if (status != kSuccess) return Fail(file + ": inference failed: " + status.ToString());
    const double ms = std::chrono::duration<double, std::milli>(end - start).count();
    total_ms += ms;
    for (size_t k = 0; k < outputs.size(); ++k) {
      std::shared_ptr<const void> data = outputs[k].Data();
      const std::string out = JoinPath(options.output_path,
                                       Stem(file) + "_" + std::to_string(k) + ".bin");
      if (!WriteFileAtomic(out, data.get(), outputs[k].DataSize(), &error)) return Fail(error);
    }
    timing << Stem(file) << "," << ms << "\n";
  }
  const std::string text = timing.str();
  if (!WriteFileAtomic(JoinPath(options.output_path, "time_per_input.csv"), text.data(),
                       text.size(), &error)) {
    return Fail(error);
  }
  std::printf("inferred %zu inputs, average %.3f ms per input\n", files.size(),
              total_ms / static_cast<double>(files.size()));
  return 0;
}
