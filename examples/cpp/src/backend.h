// The runtimes that can run a bundle, each in its own translation unit (its headers are the
// slow part of the build), compiled in only when CMake found the runtime.
#pragma once

#include <string>
#include <vector>

#include "manifest.h"
#include "tensor.h"

namespace segexport {

struct RunOptions {
  int threads = 0;        // 0: the runtime's default
  bool optimize = false;  // torch::jit::optimize_for_inference (TorchScript only)
};

// The runtimes compiled into this executable, e.g. "LibTorch (torchscript, aoti), OpenVINO (onnx)".
std::string backends_built();

// Run the bundle's artifact on `x` in the runtime its target needs; one Tensor per manifest output,
// in the manifest's order. Throws UserError when this build lacks that runtime.
std::vector<Tensor> run_bundle(const Manifest& m, const Tensor& x, const RunOptions& options);

#ifdef SEGEXPORT_WITH_LIBTORCH
std::vector<Tensor> run_libtorch(const Manifest& m, const Tensor& x, const RunOptions& options);
#endif
#ifdef SEGEXPORT_WITH_OPENVINO
std::vector<Tensor> run_openvino(const Manifest& m, const Tensor& x, const RunOptions& options);
#endif

}  // namespace segexport
