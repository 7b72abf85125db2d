// The error a user can cause (bad bundle, bad input): main prints its message on one line and exits 2.
#pragma once

#include <stdexcept>
#include <string>

namespace segexport {

class UserError : public std::runtime_error {
 public:
  explicit UserError(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace segexport
