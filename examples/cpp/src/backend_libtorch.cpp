// The LibTorch backend: TorchScript (torch::jit::load) and AOTInductor (AOTIModelPackageLoader)
// bundles, on the CPU, with the LibTorch that the installed torch wheel ships.

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <string>
#include <vector>

#include "backend.h"
#include "errors.h"

namespace segexport {

namespace {

std::string first_line(const std::string& text) {
  std::string line = text.substr(0, text.find('\n'));
  return line.empty() ? "unknown error" : line;
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

}  // namespace

std::vector<Tensor> run_libtorch(const Manifest& m, const Tensor& x, const RunOptions& options) {
  if (options.threads > 0) at::set_num_threads(options.threads);
  // from_blob does not copy; the input outlives the call.
  at::Tensor input = at::from_blob(const_cast<float*>(x.values.data()), x.shape, at::kFloat);
  std::vector<at::Tensor> outputs;
  try {
    outputs = m.target == "aoti" ? run_aoti(m, input) : run_torchscript(m, input, options.optimize);
  } catch (const c10::Error& e) {
    throw std::runtime_error("libtorch: " + first_line(e.what_without_backtrace()));
  }
  std::vector<Tensor> result;
  for (const at::Tensor& out : outputs) {
    at::Tensor t = out.to(at::kFloat).contiguous();
    Tensor r;
    r.shape = t.sizes().vec();
    r.values.assign(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
    r.integer = !out.is_floating_point();
    result.push_back(std::move(r));
  }
  return result;
}

}  // namespace segexport
