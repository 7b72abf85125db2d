// The OpenVINO backend: an ONNX bundle's model.onnx (fp32, or the Q/DQ graph of --int8) read by
// OpenVINO's ONNX frontend and compiled for the CPU plugin, with the runtime inside the openvino wheel.

#include <openvino/openvino.hpp>

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

Tensor to_host(const ov::Tensor& t) {
  Tensor r;
  for (size_t d : t.get_shape()) r.shape.push_back(static_cast<int64_t>(d));
  r.values.resize(t.get_size());
  const ov::element::Type type = t.get_element_type();
  if (type == ov::element::f32) {
    const float* p = t.data<const float>();
    r.values.assign(p, p + t.get_size());
  } else if (type == ov::element::f16) {
    const ov::float16* p = t.data<const ov::float16>();
    for (size_t i = 0; i < t.get_size(); ++i) r.values[i] = static_cast<float>(p[i]);
  } else if (type == ov::element::i64) {  // class indices (activation argmax2d)
    const int64_t* p = t.data<const int64_t>();
    for (size_t i = 0; i < t.get_size(); ++i) r.values[i] = static_cast<float>(p[i]);
    r.integer = true;
  } else if (type == ov::element::i32) {
    const int32_t* p = t.data<const int32_t>();
    for (size_t i = 0; i < t.get_size(); ++i) r.values[i] = static_cast<float>(p[i]);
    r.integer = true;
  } else {
    throw std::runtime_error("openvino: an output of element type " + type.get_type_name() + ", which this program does not convert");
  }
  return r;
}

}  // namespace

std::vector<Tensor> run_openvino(const Manifest& m, const Tensor& x, const RunOptions& options) {
  ov::Core core;
  std::shared_ptr<ov::Model> model;
  try {
    model = core.read_model(m.artifact_path());
  } catch (const ov::Exception& e) {
    throw UserError("cannot read " + m.artifact_path() + " as an ONNX model: " + first_line(e.what()));
  }
  // One request at a time, as fast as possible: the latency hint (one stream), the thread count if given.
  // The graph runs at the precision it was written in: on CPUs with bf16 units OpenVINO would
  // otherwise compute an fp32 graph in bf16, far outside the bundle's fp32 parity.
  ov::AnyMap config{ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY), ov::hint::inference_precision(ov::element::f32)};
  if (options.threads > 0) config.emplace(ov::inference_num_threads(options.threads));
  ov::CompiledModel compiled = core.compile_model(model, "CPU", config);
  ov::InferRequest request = compiled.create_infer_request();

  // The manifest names the input and outputs; a graph that lacks one is not the bundle's model.
  auto port = [&](const std::string& name, bool input) {
    try {
      return input ? compiled.input(name) : compiled.output(name);
    } catch (const ov::Exception&) {
      throw UserError(m.artifact_path() + " has no " + (input ? "input" : "output") + " named '" + name + "', which the manifest lists");
    }
  };
  ov::Shape shape(x.shape.begin(), x.shape.end());
  // Wraps the input's memory without copying; the tensor is only read.
  request.set_tensor(port(m.inputs[0].name, true), ov::Tensor(ov::element::f32, shape, const_cast<float*>(x.values.data())));
  request.infer();
  std::vector<Tensor> outputs;
  for (const TensorSpec& spec : m.outputs) outputs.push_back(to_host(request.get_tensor(port(spec.name, false))));
  return outputs;
}

}  // namespace segexport
