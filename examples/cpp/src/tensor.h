// A float32 NCHW tensor in host memory: what the backends take and return, so that main.cpp
// (inputs, outputs, PNG masks) compiles without any runtime's headers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace segexport {

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> values;  // row-major, shape's product long
  // The model returned integers (class indices of an argmax2d mask), converted to float for the file.
  bool integer = false;

  size_t numel() const {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    return n;
  }
};

}  // namespace segexport
