/**
 * Conv-TasNet inference on Ascend 310 with MindSpore's C++ API.
 *
 *   main --mindir_path=conv_tasnet.mindir --input_path=<folder of .bin> --output_path=<folder>
 *        [--device_id=0]
 *
 * Every input file is one mixture [1, T] of float32 (T from the file size). A MINDIR exported
 * with a dynamic time axis is resized to each T; one exported with a fixed length takes only
 * inputs of that length (preprocess_310.py cuts and pads them so). For input <name>.bin the app
 * writes <name>_<k>.bin for each model output k ([1, C, T] float32) and one line
 * "<name>,<milliseconds>" to time_per_input.csv in the output folder.
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
