#include <string>

#include "backend.h"
#include "errors.h"

namespace segexport {

std::string backends_built() {
  std::string built;
#ifdef SEGEXPORT_WITH_LIBTORCH
  built += "LibTorch (torchscript, aoti)";
#endif
#ifdef SEGEXPORT_WITH_OPENVINO
  built += std::string(built.empty() ? "" : ", ") + "OpenVINO (onnx)";
#endif
  return built;
}

std::vector<Tensor> run_bundle(const Manifest& m, const Tensor& x, const RunOptions& options) {
  if (options.optimize && m.target != "torchscript") {
    throw UserError("--optimize applies to torchscript bundles; '" + m.bundle_dir + "' is a " + m.target + " bundle");
  }
  if (m.target == "torchscript" || m.target == "aoti") {
#ifdef SEGEXPORT_WITH_LIBTORCH
    return run_libtorch(m, x, options);
#else
    throw UserError("bundle '" + m.bundle_dir + "' is a " + m.target + " bundle, which runs in LibTorch; this segexport_infer was built with " +
                    backends_built() + " only (rebuild with LibTorch found, see examples/cpp/README.md)");
#endif
  }
#ifdef SEGEXPORT_WITH_OPENVINO
  return run_openvino(m, x, options);  // load_manifest let through only the targets above and onnx
#else
  throw UserError("bundle '" + m.bundle_dir + "' is an onnx bundle, which runs in OpenVINO; this segexport_infer was built with " +
                  backends_built() + " only (rebuild with OpenVINO found, see examples/cpp/README.md)");
#endif
}

}  // namespace segexport
