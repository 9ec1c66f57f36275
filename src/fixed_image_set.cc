// src/fixed_image_set.cc — FixedImageSet and broker_source() (fixed_image.h): an image mapped
// with the images it points into.
#include <algorithm>
#include <cerrno>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fixed_image_format.h"
#include "mapwright/error.h"
#include "mapwright/fixed_image.h"

namespace mapwright {
namespace {

constexpr Error::DetailIsCause kCause{};
constexpr const char* kMap = "mapping fixed image";

// "a -> b -> c"
std::string chain(const std::vector<std::string>& names, const std::string& last) {
  std::string text;
  for (const std::string& name : names) text += "'" + name + "' -> ";
  return text + "'" + last + "'";
}

}  // namespace

struct FixedImageSet::State {
  FixedImageSource source;
  std::map<std::string, FixedMapOptions> expected;
  std::map<std::string, FixedImage> mapped;  // nodes never move: references stay valid

  // Maps `name` (for `dependent`, which points into it, unless that is empty) after its
  // dependencies; `path` holds the images being mapped, outermost first, and `added` gets
  // every name this call put into `mapped`.
  const FixedImage& map(const std::string& name, const std::string& dependent,
                        std::vector<std::string>& path, std::vector<std::string>& added) {
    const std::string whose = dependent.empty() ? "" : ", which '" + dependent + "' points into";
    const auto refuse = [&](int error, const std::string& what) {
      throw Error(error, kMap, name, "(" + what + ")", kCause);
    };
    if (const auto found = mapped.find(name); found != mapped.end()) {
      if (!dependent.empty() && !found->second.report().at_base) {
        refuse(EEXIST, "this set mapped it away from its base, which was taken, and '" +
                           dependent + "' points into it there");
      }
      return found->second;
    }
    if (std::find(path.begin(), path.end(), name) != path.end()) {
      refuse(EINVAL, "the images' dependencies come back to it: " + chain(path, name));
    }
    if (path.size() >= static_cast<std::size_t>(kFixedImageMaxDepth)) {
      refuse(EINVAL, "its dependencies are deeper than " + std::to_string(kFixedImageMaxDepth) +
                         " images: " + chain({path.front(), "..."}, name));
    }

    std::optional<SealedImage> got;
    try {
      got.emplace(source(name));
    } catch (const Error& e) {
      refuse(e.error(), "getting it from the source" + whose + ": " + e.what());
    }
    const SealedImage image = std::move(*got);
    FixedMapOptions options;
    if (const auto found = expected.find(name); found != expected.end()) options = found->second;
    if (options.name.empty()) options.name = name;
    // The manifest is read before FixedImage::map checks the digest: under the full check, what
    // goes wrong with it is damage when the digest says so (checked then, so as to hash once).
    detail::FixedHeader header;
    bool header_ok = false;
    std::string why;
    const detail::FixedManifest manifest = detail::read_fixed_image(image, &header, &header_ok, &why);
    if (!header_ok) refuse(EINVAL, "what the source gave" + whose + ": " + why);
    const auto damaged = [&] {
      return options.check == FixedMapOptions::Check::kFull && detail::fixed_image_damaged(image, header);
    };
    const auto refuse_read = [&](const std::string& what) {
      if (damaged()) refuse(EBADMSG, "the digest does not match: the image is damaged (" + what + ")");
      refuse(EINVAL, what);
    };
    if (!why.empty()) refuse_read("what the source gave" + whose + ": " + why);
    if (manifest.name != name) {
      refuse_read("the source answered with image '" + manifest.name + "'" + whose);
    }

    path.push_back(name);
    for (const FixedImageDependency& dependency : manifest.dependencies) {
      try {
        options.dependencies.push_back(map(dependency.name, name, path, added).as_dependency());
      } catch (const Error&) {
        if (damaged()) refuse(EBADMSG, "the digest does not match: the image is damaged");
        throw;
      }
    }
    path.pop_back();

    if (!dependent.empty()) options.allow_relocation = false;  // pointers into it are final
    try {
      const auto [at, inserted] = mapped.emplace(name, FixedImage::map(image, options));
      added.push_back(name);
      return at->second;
    } catch (const Error& e) {
      if (e.error() != EEXIST || dependent.empty()) throw;
      refuse(EEXIST, "its base " + detail::hex(header.base) + " is taken in this process" +
                         whose + ", so it cannot be mapped elsewhere");
    }
    __builtin_unreachable();
  }
};

FixedImageSet::FixedImageSet(FixedImageSource source)
    : state_(std::make_unique<State>(State{std::move(source), {}, {}})) {
  if (!state_->source) throw Error(EINVAL, "making fixed image set", "", "(no source)", kCause);
}
FixedImageSet::FixedImageSet(FixedImageSet&&) noexcept = default;
FixedImageSet& FixedImageSet::operator=(FixedImageSet&&) noexcept = default;
FixedImageSet::~FixedImageSet() = default;

void FixedImageSet::expect(const std::string& name, FixedMapOptions options) {
  if (!options.dependencies.empty()) {
    throw Error(EINVAL, "expecting fixed image", name,
                "(FixedMapOptions::dependencies are the set's to fill in: leave them empty)", kCause);
  }
  state_->expected.insert_or_assign(name, std::move(options));
}

const FixedImage& FixedImageSet::map(const std::string& name) {
  std::vector<std::string> path;
  std::vector<std::string> added;
  try {
    return state_->map(name, "", path, added);
  } catch (...) {
    for (const std::string& gone : added) state_->mapped.erase(gone);
    throw;
  }
}

const FixedImage* FixedImageSet::find(const std::string& name) const noexcept {
  const auto found = state_->mapped.find(name);
  return found == state_->mapped.end() ? nullptr : &found->second;
}

std::size_t FixedImageSet::size() const noexcept { return state_->mapped.size(); }

FixedImageSource broker_source(std::filesystem::path socket_path) {
  return [path = std::move(socket_path)](const std::string& name) { return request_image(path, name); };
}

}  // namespace mapwright
