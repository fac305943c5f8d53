/**
 * File and command-line helpers of the Ascend 310 inference app.
 *
 * Data files are raw little-endian float32 arrays without a header: an input file holds one
 * mixture [1, T] (T = file size / 4), an output file one model output [1, C, T].
 */
#ifndef CONV_TASNET_ASCEND310_INFER_INC_UTILS_H_
#define CONV_TASNET_ASCEND310_INFER_INC_UTILS_H_

#include <cstddef>
#include <string>
#include <vector>

struct Options {
  std::string mindir_path;  // --mindir_path: the exported model
  std::string input_path;   // --input_path: folder of input .bin files
  std::string output_path;  // --output_path: folder for <name>_<output index>.bin results
  int device_id = 0;        // --device_id: Ascend device index
  bool stream = false;      // --stream=true: the model is a streaming step (inc/stream.h)
  int stream_delay = 0;     // --stream_delay: the sidecar's delay_samples (stream mode)
};

// Parses --key=value arguments into options; returns false with a message in *error.
bool ParseOptions(int argc, char **argv, Options *options, std::string *error);

// The .bin files directly inside dir, sorted by name; false with a message if dir is unreadable.
bool ListBinFiles(const std::string &dir, std::vector<std::string> *files, std::string *error);

// Reads a whole file of float32 values; false with a message if missing, empty or not a multiple
// of 4 bytes.
bool ReadFloatFile(const std::string &path, std::vector<float> *data, std::string *error);

// Writes size bytes to path through a temporary file renamed into place.
bool WriteFileAtomic(const std::string &path, const void *data, size_t size, std::string *error);

// Creates dir and its parents if needed.
bool MakeDirs(const std::string &dir, std::string *error);

// "a/b/name.bin" -> "name".
std::string Stem(const std::string &path);

std::string JoinPath(const std::string &dir, const std::string &name);

#endif  // CONV_TASNET_ASCEND310_INFER_INC_UTILS_H_
