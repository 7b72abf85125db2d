// segexport_infer: run a segexport bundle (TorchScript or AOTInductor) on one input, from C++ without Python.
//
//   segexport_infer BUNDLE_DIR INPUT OUT_DIR [--shape NxCxHxW] [--threads N] [--optimize]
//
// INPUT is a PNG, a binary PPM/PGM (normalized with the manifest's mean/std/input_range),
// or a raw little-endian float32 NCHW file (.f32/.raw/.bin, used as is: already normalized).
// Writes OUT_DIR/<output>.f32 for every output (raw float32, the shape printed on stdout),
// OUT_DIR/mask.png (class per pixel: argmax, or 0/255 for one channel; mask_<n>.png per
// image when the batch is larger than 1), and prints the aux label's class when there is one.
// Errors print one line on stderr: exit 2 for a bad bundle or input, 1 for anything else.
//
// Only this file includes LibTorch headers (the slow part of the build); JSON, images and
// raw files live in separate translation units that compile in a second.

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "errors.h"
#include "image_io.h"
#include "manifest.h"

namespace {

using segexport::Manifest;
using segexport::UserError;

struct Options {
  std::string bundle;
  std::string input;
  std::string out_dir;
  std::vector<int64_t> shape;  // --shape, for raw inputs to dynamic bundles
  int threads = 0;
  bool optimize = false;
};

const char* kUsage =
    "usage: segexport_infer BUNDLE_DIR INPUT OUT_DIR [--shape NxCxHxW] [--threads N] [--optimize]\n"
    "  INPUT: PNG, binary PPM/PGM, or raw float32 NCHW (.f32/.raw/.bin, already normalized)\n"
    "  --shape     shape of a raw input (default: the bundle's input shape)\n"
    "  --threads   CPU threads for LibTorch\n"
    "  --optimize  torch::jit::optimize_for_inference after loading (TorchScript, CPU)\n";

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
      std::cout << kUsage;
      std::exit(0);
    } else if (a == "--shape") {
      o.shape = parse_shape(value());
    } else if (a == "--threads") {
      std::string v = value();
      o.threads = std::atoi(v.c_str());
      if (o.threads < 1) throw UserError("--threads '" + v + "' must be an integer >= 1");
    } else if (a == "--optimize") {
      o.optimize = true;
    } else if (a.rfind("--", 0) == 0) {
      throw UserError("unknown option " + a + "; allowed: --shape, --threads, --optimize");
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() != 3) throw UserError("expected BUNDLE_DIR INPUT OUT_DIR; got " + std::to_string(positional.size()) + " argument(s). " + kUsage);
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

at::Tensor image_tensor(const Manifest& m, const segexport::Image& img, const std::string& path) {
  const int64_t channels = m.inputs[0].shape[1];
  if (channels != 1 && channels != 3) {
    throw UserError("this bundle takes " + std::to_string(channels) + " channels; images give 1 or 3: pass a raw float32 file");
  }
  check_shape(m, {1, channels, img.height, img.width}, "input image '" + path + "'");
  at::Tensor x = at::empty({1, channels, img.height, img.width}, at::kFloat);
  float* dst = x.data_ptr<float>();
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
      dst[c * plane + p] = static_cast<float>((v - mean) / stdev);
    }
  }
  return x;
}

at::Tensor load_input(const Manifest& m, const Options& o) {
  if (!std::filesystem::is_regular_file(o.input)) throw UserError("input '" + o.input + "' does not exist or is not a file");
  if (segexport::looks_like_image(o.input)) {
    return image_tensor(m, segexport::read_image(o.input), o.input);
  }
  std::string ext = std::filesystem::path(o.input).extension().string();
  if (ext != ".f32" && ext != ".raw" && ext != ".bin") {
    throw UserError("cannot read input '" + o.input + "': not a PNG or binary PPM/PGM, and raw float32 files must end in .f32, .raw or .bin");
  }
  std::vector<int64_t> shape = o.shape.empty() ? m.inputs[0].shape : o.shape;
  for (int64_t d : shape) {
    if (d < 0) throw UserError("the bundle's input shape is dynamic (" + segexport::shape_string(shape) + "): give the raw input's shape with --shape NxCxHxW");
  }
  check_shape(m, shape, "raw input '" + o.input + "'");
  size_t count = 1;
  for (int64_t d : shape) count *= static_cast<size_t>(d);
  std::vector<float> values = segexport::read_raw_f32(o.input, count, segexport::shape_string(shape));
  return at::from_blob(values.data(), shape, at::kFloat).clone();
}

std::vector<at::Tensor> run_torchscript(const Manifest& m, const at::Tensor& x, bool optimize) {
  torch::jit::Module module;
  try {
    module = torch::jit::load(m.artifact_path(), torch::kCPU);
  } catch (const c10::Error& e) {
    throw UserError("cannot load " + m.artifact_path() + " as TorchScript: " + first_line(e.what_without_backtrace()));
  }
  module.eval();
  if (optimize) module = torch::jit::optimize_for_inference(module);
  c10::InferenceMode guard;
  c10::IValue out = module.forward({x});
  std::vector<at::Tensor> tensors;
  if (out.isTuple()) {
    for (const auto& element : out.toTupleRef().elements()) tensors.push_back(element.toTensor());
  } else if (out.isTensorList()) {
    for (const at::Tensor& t : out.toTensorVector()) tensors.push_back(t);
  } else {
    tensors.push_back(out.toTensor());
  }
  return tensors;
}

std::vector<at::Tensor> run_aoti(const Manifest& m, const at::Tensor& x) {
  try {
    torch::inductor::AOTIModelPackageLoader loader(m.artifact_path());
    c10::InferenceMode guard;
    return loader.run({x});
  } catch (const c10::Error& e) {
    throw UserError("cannot run the AOTInductor package " + m.artifact_path() + ": " + first_line(e.what_without_backtrace()));
  }
}

// Class per pixel of one image's mask: argmax over the channels of a C x H x W float mask (a threshold
// for one channel), or the values of an H x W integer mask (activation argmax2d).
std::vector<uint8_t> class_map(const at::Tensor& mask, double threshold) {
  at::Tensor classes;
  if (!mask.is_floating_point()) {
    classes = (mask.dim() == 3 ? mask.select(0, 0) : mask).clamp(0, 255);
  } else if (mask.size(0) == 1) {
    classes = (mask.select(0, 0) > threshold).to(at::kInt) * 255;
  } else {
    classes = mask.argmax(0).clamp(0, 255);
  }
  at::Tensor bytes = classes.to(at::kByte).contiguous();
  return std::vector<uint8_t>(bytes.data_ptr<uint8_t>(), bytes.data_ptr<uint8_t>() + bytes.numel());
}

void write_outputs(const Manifest& m, const std::vector<at::Tensor>& outputs, const std::string& out_dir) {
  if (outputs.size() != m.outputs.size()) {
    throw UserError("the model returned " + std::to_string(outputs.size()) + " outputs but the manifest lists " + std::to_string(m.outputs.size()));
  }
  std::filesystem::create_directories(out_dir);
  for (size_t i = 0; i < outputs.size(); ++i) {
    const std::string& name = m.outputs[i].name;
    at::Tensor t = outputs[i].to(at::kFloat).contiguous();
    std::string raw_path = out_dir + "/" + name + ".f32";
    segexport::write_raw_f32(raw_path, t.data_ptr<float>(), static_cast<size_t>(t.numel()));
    std::cout << name << ": " << segexport::shape_string(t.sizes().vec()) << " float32 -> " << raw_path << "\n";
    const bool class_indices = !outputs[i].is_floating_point() && outputs[i].dim() == 3;  // N x H x W
    if (name == "mask" && (outputs[i].dim() == 4 || class_indices)) {
      const double threshold = m.activation == "sigmoid" ? 0.5 : 0.0;
      const int64_t batch = outputs[i].size(0);
      for (int64_t n = 0; n < batch; ++n) {
        std::string png = out_dir + (batch == 1 ? "/mask.png" : "/mask_" + std::to_string(n) + ".png");
        at::Tensor one = outputs[i].select(0, n);
        segexport::write_png_gray(png, static_cast<int>(one.size(-1)), static_cast<int>(one.size(-2)), class_map(one, threshold));
        std::cout << "mask classes -> " << png << "\n";
      }
    } else if (name == "label" && outputs[i].dim() == 2) {
      for (int64_t n = 0; n < outputs[i].size(0); ++n) {
        std::cout << "label[" << n << "]: class " << outputs[i].select(0, n).argmax().item<int64_t>() << "\n";
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Options o = parse_args(argc, argv);
    Manifest m = segexport::load_manifest(o.bundle);
    if (o.threads > 0) at::set_num_threads(o.threads);
    at::Tensor x = load_input(m, o);
    std::vector<at::Tensor> outputs = m.target == "aoti" ? run_aoti(m, x) : run_torchscript(m, x, o.optimize);
    write_outputs(m, outputs, o.out_dir);
    return 0;
  } catch (const UserError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const c10::Error& e) {
    std::cerr << "error: libtorch: " << first_line(e.what_without_backtrace()) << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << first_line(e.what()) << "\n";
    return 1;
  }
}
