// segexport_infer: run a segexport bundle on one input, from C++ without Python.
//
//   segexport_infer BUNDLE_DIR INPUT OUT_DIR [--shape NxCxHxW] [--threads N] [--optimize]
//
// TorchScript and AOTInductor bundles run in LibTorch, ONNX bundles (fp32 or int8) in OpenVINO;
// each backend is compiled in where CMake found its runtime (`segexport_infer --help` lists them).
// INPUT is a PNG, a binary PPM/PGM (normalized with the manifest's mean/std/input_range/input_space),
// or a raw little-endian float32 NCHW file (.f32/.raw/.bin, used as is: already normalized).
// Writes OUT_DIR/<output>.f32 for every output (raw float32, the shape printed on stdout),
// OUT_DIR/mask.png (class per pixel: argmax, or 0/255 for one channel; mask_<n>.png per
// image when the batch is larger than 1), and prints the aux label's class when there is one.
// Errors print one line on stderr: exit 2 for a bad bundle or input, 1 for anything else.
//
// No runtime's headers are included here: the backends live in backend_*.cpp.

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "backend.h"
#include "errors.h"
#include "image_io.h"
#include "manifest.h"
#include "tensor.h"

namespace {

using segexport::Manifest;
using segexport::Tensor;
using segexport::UserError;

struct Options {
  std::string bundle;
  std::string input;
  std::string out_dir;
  std::vector<int64_t> shape;  // --shape, for raw inputs to dynamic bundles
  segexport::RunOptions run;
};

std::string usage() {
  return "usage: segexport_infer BUNDLE_DIR INPUT OUT_DIR [--shape NxCxHxW] [--threads N] [--optimize]\n"
         "  INPUT: PNG, binary PPM/PGM, or raw float32 NCHW (.f32/.raw/.bin, already normalized)\n"
         "  --shape     shape of a raw input (default: the bundle's input shape)\n"
         "  --threads   CPU threads for the runtime\n"
         "  --optimize  torch::jit::optimize_for_inference after loading (TorchScript, CPU)\n"
         "built with: " + segexport::backends_built() + "\n";
}

std::string first_line(const std::string& text) {
  std::string line = text.substr(0, text.find('\n'));
  return line.empty() ? "unknown error" : line;
}

std::vector<int64_t> parse_shape(const std::string& text) {
  std::vector<int64_t> dims;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('x', start);
    std::string part = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
    char* tail = nullptr;
    long long v = std::strtoll(part.c_str(), &tail, 10);
    if (part.empty() || *tail != '\0' || v < 1) throw UserError("--shape '" + text + "' is not of the form NxCxHxW (e.g. 1x3x512x512)");
    dims.push_back(v);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  if (dims.size() != 4) throw UserError("--shape '" + text + "' needs 4 dims: NxCxHxW");
  return dims;
}

Options parse_args(int argc, char** argv) {
  Options o;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UserError(a + " needs a value");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      std::cout << usage();
      std::exit(0);
    } else if (a == "--shape") {
      o.shape = parse_shape(value());
    } else if (a == "--threads") {
      std::string v = value();
      o.run.threads = std::atoi(v.c_str());
      if (o.run.threads < 1) throw UserError("--threads '" + v + "' must be an integer >= 1");
    } else if (a == "--optimize") {
      o.run.optimize = true;
    } else if (a.rfind("--", 0) == 0) {
      throw UserError("unknown option " + a + "; allowed: --shape, --threads, --optimize");
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() != 3) {
    throw UserError("expected BUNDLE_DIR INPUT OUT_DIR; got " + std::to_string(positional.size()) + " argument(s) (--help shows the usage)");
  }
  o.bundle = positional[0];
  o.input = positional[1];
  o.out_dir = positional[2];
  return o;
}

// The bundle's input dims (-1 where dynamic) against a concrete shape: equal where fixed, H and W multiples of the stride.
void check_shape(const Manifest& m, const std::vector<int64_t>& shape, const std::string& what) {
  const std::vector<int64_t>& expected = m.inputs[0].shape;
  for (size_t i = 0; i < 4; ++i) {
    if (expected[i] >= 0 && shape[i] != expected[i]) {
      throw UserError(what + " is " + segexport::shape_string(shape) + " (NxCxHxW) but the bundle takes " +
                      segexport::shape_string(expected) +
                      (m.dynamic ? "" : "; resize the input, or build the bundle with --dynamic"));
    }
  }
  if (m.dynamic && (shape[2] % m.stride != 0 || shape[3] % m.stride != 0)) {
    throw UserError(what + " is " + std::to_string(shape[2]) + "x" + std::to_string(shape[3]) +
                    " (HxW); this model needs multiples of " + std::to_string(m.stride));
  }
}

Tensor image_tensor(const Manifest& m, const segexport::Image& img, const std::string& path) {
  const int64_t channels = m.inputs[0].shape[1];
  if (channels != 1 && channels != 3) {
    throw UserError("this bundle takes " + std::to_string(channels) + " channels; images give 1 or 3: pass a raw float32 file");
  }
  Tensor x;
  x.shape = {1, channels, img.height, img.width};
  check_shape(m, x.shape, "input image '" + path + "'");
  x.values.resize(x.numel());
  const size_t plane = static_cast<size_t>(img.height) * img.width;
  for (int64_t c = 0; c < channels; ++c) {
    // Source channel: BGR models read the image's channels in reverse; gray images feed every channel.
    int64_t src_c = img.channels == 1 ? 0 : (m.bgr ? 2 - c : c);
    double mean = m.mean.size() == static_cast<size_t>(channels) ? m.mean[c] : 0.0;
    double stdev = m.stdev.size() == static_cast<size_t>(channels) ? m.stdev[c] : 1.0;
    for (size_t p = 0; p < plane; ++p) {
      double v;
      if (channels == 1 && img.channels == 3) {  // luma of an RGB image for a 1-channel model
        const uint8_t* px = &img.pixels[p * 3];
        v = 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2];
      } else {
        v = img.pixels[p * img.channels + src_c];
      }
      v = v / 255.0 * (m.range_hi - m.range_lo) + m.range_lo;
      x.values[c * plane + p] = static_cast<float>((v - mean) / stdev);
    }
  }
  return x;
}

Tensor load_input(const Manifest& m, const Options& o) {
  if (!std::filesystem::is_regular_file(o.input)) throw UserError("input '" + o.input + "' does not exist or is not a file");
  if (segexport::looks_like_image(o.input)) {
    return image_tensor(m, segexport::read_image(o.input), o.input);
  }
  std::string ext = std::filesystem::path(o.input).extension().string();
  if (ext != ".f32" && ext != ".raw" && ext != ".bin") {
    throw UserError("cannot read input '" + o.input + "': not a PNG or binary PPM/PGM, and raw float32 files must end in .f32, .raw or .bin");
  }
  Tensor x;
  x.shape = o.shape.empty() ? m.inputs[0].shape : o.shape;
  for (int64_t d : x.shape) {
    if (d < 0) throw UserError("the bundle's input shape is dynamic (" + segexport::shape_string(x.shape) + "): give the raw input's shape with --shape NxCxHxW");
  }
  check_shape(m, x.shape, "raw input '" + o.input + "'");
  x.values = segexport::read_raw_f32(o.input, x.numel(), segexport::shape_string(x.shape));
  return x;
}

// Class per pixel of one image's mask (channels x plane values at `data`): argmax over the channels,
// a threshold for one channel (0/255), or the values themselves for class indices (activation argmax2d).
std::vector<uint8_t> class_map(const float* data, int64_t channels, size_t plane, bool indices, double threshold) {
  std::vector<uint8_t> classes(plane);
  for (size_t p = 0; p < plane; ++p) {
    int64_t best = 0;
    if (indices) {
      best = static_cast<int64_t>(data[p]);
    } else if (channels == 1) {
      best = data[p] > threshold ? 255 : 0;
    } else {
      for (int64_t c = 1; c < channels; ++c) {
        if (data[c * plane + p] > data[best * plane + p]) best = c;  // first maximum, as argmax
      }
    }
    classes[p] = static_cast<uint8_t>(std::min<int64_t>(std::max<int64_t>(best, 0), 255));
  }
  return classes;
}

void write_outputs(const Manifest& m, const std::vector<Tensor>& outputs, const std::string& out_dir) {
  if (outputs.size() != m.outputs.size()) {
    throw UserError("the model returned " + std::to_string(outputs.size()) + " outputs but the manifest lists " + std::to_string(m.outputs.size()));
  }
  std::filesystem::create_directories(out_dir);
  for (size_t i = 0; i < outputs.size(); ++i) {
    const std::string& name = m.outputs[i].name;
    const Tensor& t = outputs[i];
    std::string raw_path = out_dir + "/" + name + ".f32";
    segexport::write_raw_f32(raw_path, t.values.data(), t.values.size());
    std::cout << name << ": " << segexport::shape_string(t.shape) << " float32 -> " << raw_path << "\n";
    const bool class_indices = t.integer && t.shape.size() == 3;  // N x H x W
    if (name == "mask" && (t.shape.size() == 4 || class_indices)) {
      const double threshold = m.activation == "sigmoid" ? 0.5 : 0.0;
      const int64_t batch = t.shape[0];
      const int64_t channels = class_indices ? 1 : t.shape[1];
      const int64_t height = t.shape[t.shape.size() - 2], width = t.shape.back();
      const size_t plane = static_cast<size_t>(height) * width;
      for (int64_t n = 0; n < batch; ++n) {
        std::string png = out_dir + (batch == 1 ? "/mask.png" : "/mask_" + std::to_string(n) + ".png");
        const float* one = t.values.data() + n * channels * plane;
        segexport::write_png_gray(png, static_cast<int>(width), static_cast<int>(height), class_map(one, channels, plane, class_indices, threshold));
        std::cout << "mask classes -> " << png << "\n";
      }
    } else if (name == "label" && t.shape.size() == 2) {
      for (int64_t n = 0; n < t.shape[0]; ++n) {
        const float* row = t.values.data() + n * t.shape[1];
        int64_t best = 0;
        for (int64_t k = 1; k < t.shape[1]; ++k) {
          if (row[k] > row[best]) best = k;
        }
        std::cout << "label[" << n << "]: class " << best << "\n";
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Options o = parse_args(argc, argv);
    Manifest m = segexport::load_manifest(o.bundle);
    Tensor x = load_input(m, o);
    write_outputs(m, segexport::run_bundle(m, x, o.run), o.out_dir);
    return 0;
  } catch (const UserError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << first_line(e.what()) << "\n";
    return 1;
  }
}
