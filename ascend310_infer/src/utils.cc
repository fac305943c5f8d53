#include "inc/utils.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

namespace {

bool EndsWith(const std::string &text, const std::string &suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

bool ParseOptions(int argc, char **argv, Options *options, std::string *error) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    size_t eq = arg.find('=');
    if (arg.rfind("--", 0) != 0 || eq == std::string::npos) {
      *error = "unexpected argument '" + arg + "' (expected --key=value)";
      return false;
    }
    std::string key = arg.substr(2, eq - 2);
    std::string value = arg.substr(eq + 1);
    if (key == "mindir_path") {
      options->mindir_path = value;
    } else if (key == "input_path") {
      options->input_path = value;
    } else if (key == "output_path") {
      options->output_path = value;
    } else if (key == "device_id") {
      char *end = nullptr;
      long id = std::strtol(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || id < 0) {
        *error = "--device_id: expected a device index >= 0, got '" + value + "'";
        return false;
      }
      options->device_id = static_cast<int>(id);
    } else if (key == "stream") {
      if (value != "true" && value != "false") {
        *error = "--stream: expected true or false, got '" + value + "'";
        return false;
      }
      options->stream = value == "true";
    } else if (key == "stream_delay") {
      char *end = nullptr;
      long delay = std::strtol(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || delay < 0) {
        *error = "--stream_delay: expected a number of samples >= 0, got '" + value + "'";
        return false;
      }
      options->stream_delay = static_cast<int>(delay);
    } else {
      *error = "unknown option --" + key;
      return false;
    }
  }
  if (options->mindir_path.empty() || options->input_path.empty() ||
      options->output_path.empty()) {
    *error = "usage: main --mindir_path=<model.mindir> --input_path=<folder of .bin> "
             "--output_path=<result folder> [--device_id=0] [--stream=true --stream_delay=<samples>]";
    return false;
  }
  return true;
}

bool ListBinFiles(const std::string &dir, std::vector<std::string> *files, std::string *error) {
  DIR *handle = opendir(dir.c_str());
  if (handle == nullptr) {
    *error = dir + ": cannot open folder (" + std::strerror(errno) + ")";
    return false;
  }
  files->clear();
  for (struct dirent *entry = readdir(handle); entry != nullptr; entry = readdir(handle)) {
    std::string name = entry->d_name;
    if (EndsWith(name, ".bin")) {
      files->push_back(JoinPath(dir, name));
    }
  }
  closedir(handle);
  std::sort(files->begin(), files->end());
  return true;
}

bool ReadFloatFile(const std::string &path, std::vector<float> *data, std::string *error) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) {
    *error = path + ": cannot open file";
    return false;
  }
  std::streamsize size = in.tellg();
  if (size <= 0 || size % static_cast<std::streamsize>(sizeof(float)) != 0) {
    *error = path + ": expected float32 samples, got " + std::to_string(size) + " bytes";
    return false;
  }
  data->resize(static_cast<size_t>(size) / sizeof(float));
  in.seekg(0, std::ios::beg);
  if (!in.read(reinterpret_cast<char *>(data->data()), size)) {
    *error = path + ": read failed";
    return false;
  }
  return true;
}

bool WriteFileAtomic(const std::string &path, const void *data, size_t size, std::string *error) {
  std::string tmp = path + ".tmp" + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out || !out.write(static_cast<const char *>(data), static_cast<std::streamsize>(size))) {
      *error = tmp + ": write failed";
      std::remove(tmp.c_str());
      return false;
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    *error = path + ": rename failed (" + std::strerror(errno) + ")";
    std::remove(tmp.c_str());
    return false;
  }
  return true;
}

bool MakeDirs(const std::string &dir, std::string *error) {
  std::string partial;
  size_t start = 0;
  while (start <= dir.size()) {
    size_t slash = dir.find('/', start);
    if (slash == std::string::npos) slash = dir.size();
    partial = dir.substr(0, slash);
    if (!partial.empty() && mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST) {
      *error = partial + ": cannot create folder (" + std::strerror(errno) + ")";
      return false;
    }
    start = slash + 1;
  }
  return true;
}

std::string Stem(const std::string &path) {
  size_t slash = path.find_last_of('/');
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  size_t dot = name.find_last_of('.');
  return dot == std::string::npos ? name : name.substr(0, dot);
}

std::string JoinPath(const std::string &dir, const std::string &name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return dir + "/" + name;
}
