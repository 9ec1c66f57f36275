#include "mapwright/error.h"

#include <utility>

namespace mapwright {
namespace {

std::string compose(const std::string& operation, const std::string& subject,
                    const std::string& detail) {
  std::string text = operation;
  if (!subject.empty()) text += " '" + subject + "'";
  if (!detail.empty()) text += " " + detail;
  return text;
}

}  // namespace

Error::Error(int error, std::string operation, std::string subject, std::string detail)
    : std::system_error(error, std::generic_category(), compose(operation, subject, detail)),
      operation_(std::move(operation)),
      subject_(std::move(subject)),
      detail_(std::move(detail)) {}

Error::Error(int error, std::string operation, std::string subject, std::string detail,
             DetailIsCause)
    : std::system_error(error, std::generic_category(), compose(operation, subject, detail)),
      operation_(std::move(operation)),
      subject_(std::move(subject)),
      detail_(std::move(detail)),
      text_(compose(operation_, subject_, detail_)) {}

const char* Error::what() const noexcept {
  return text_.empty() ? std::system_error::what() : text_.c_str();
}

}  // namespace mapwright
