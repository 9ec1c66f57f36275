// src/fixed_image_format.cc — the header, manifest and digest of fixed-base images.
#include "fixed_image_format.h"

#include <algorithm>
#include <bit>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "digest.h"
#include "os/os.h"

namespace mapwright::detail {
namespace {

static_assert(std::endian::native == std::endian::little, "fixed images are little-endian");

constexpr char kMagic[8] = {'M', 'W', 'F', 'I', 'X', 'I', 'M', 'G'};

template <class T>
void put(std::byte* at, T value) noexcept {
  std::memcpy(at, &value, sizeof value);
}
template <class T>
T get(const std::byte* at) noexcept {
  T value;
  std::memcpy(&value, at, sizeof value);
  return value;
}

std::string str(std::uint64_t value) { return std::to_string(value); }

}  // namespace

void encode_fixed_header(const FixedHeader& h, std::byte* image) noexcept {
  std::memset(image, 0, kFixedImageHeaderBytes);
  std::memcpy(image, kMagic, sizeof kMagic);
  put<std::uint32_t>(image + 8, h.version);
  put<std::uint32_t>(image + 12, static_cast<std::uint32_t>(kFixedImageHeaderBytes));
  put(image + 16, h.base);
  put(image + 24, h.size);
  put(image + 32, h.root);
  put(image + 40, h.data_end);
  put(image + 48, h.relocations);
  put(image + 56, h.relocation_count);
  put(image + 64, h.manifest);
  put(image + 72, h.manifest_bytes);
  std::memcpy(image + kFixedDigestAt, h.digest.bytes.data(), 16);
}

FixedHeader decode_fixed_header(std::span<const std::byte> bytes, std::uint64_t size,
                                std::string* why) {
  FixedHeader h;
  why->clear();
  const auto fail = [&](const std::string& reason) {
    *why = reason;
    return h;
  };
  if (size < kFixedImageHeaderBytes || bytes.size() < kFixedImageHeaderBytes) {
    return fail("it has " + str(size) + " bytes, fewer than a header's " + str(kFixedImageHeaderBytes));
  }
  const std::byte* p = bytes.data();
  if (std::memcmp(p, kMagic, sizeof kMagic) != 0) return fail("it does not start with \"MWFIXIMG\"");
  h.version = get<std::uint32_t>(p + 8);
  if (h.version != kFixedImageFormatVersion) {
    return fail("format version " + str(h.version) + " is not supported; this build reads version " +
                str(kFixedImageFormatVersion));
  }
  if (get<std::uint32_t>(p + 12) != kFixedImageHeaderBytes) return fail("the header size is wrong");
  h.base = get<std::uint64_t>(p + 16);
  h.size = get<std::uint64_t>(p + 24);
  h.root = get<std::uint64_t>(p + 32);
  h.data_end = get<std::uint64_t>(p + 40);
  h.relocations = get<std::uint64_t>(p + 48);
  h.relocation_count = get<std::uint64_t>(p + 56);
  h.manifest = get<std::uint64_t>(p + 64);
  h.manifest_bytes = get<std::uint64_t>(p + 72);
  std::memcpy(h.digest.bytes.data(), p + kFixedDigestAt, 16);
  for (std::uint64_t at = kFixedDigestAt + 16; at < kFixedImageHeaderBytes; ++at) {
    if (p[at] != std::byte{0}) return fail("header byte " + str(at) + " is not zero");
  }
  constexpr std::uint64_t kTop = kFixedImageTop;
  if (h.size != size) return fail("the header says " + str(h.size) + " bytes, the image has " + str(size));
  // Not below 64 KiB (Linux's default vm.mmap_min_addr), where null pointers plus small
  // offsets point: root may map there, and an image must not make them valid.
  if (h.base < kFixedImageLowestBase || h.base % 4096 != 0 || h.base >= kTop || h.size > kTop - h.base) {
    return fail("its base " + str(h.base) + " is not a page-aligned address from 64 KiB with room below 2^47 - 4 KiB");
  }
  if (h.data_end < kFixedImageHeaderBytes || h.data_end > size) {
    return fail("its data end " + str(h.data_end) + " is not inside the image");
  }
  if (h.relocations % 8 != 0 || h.relocations < h.data_end || h.relocations > size ||
      h.relocation_count > (size - h.relocations) / 8) {
    return fail("its relocation table (" + str(h.relocation_count) + " entries at " +
                str(h.relocations) + ") is not inside the image after the data");
  }
  if (h.manifest != h.relocations + h.relocation_count * 8 || h.manifest_bytes != size - h.manifest) {
    return fail("its manifest does not follow the relocation table up to the image's end");
  }
  if (h.manifest_bytes > kFixedManifestMaxBytes) {
    return fail("its manifest of " + str(h.manifest_bytes) + " bytes is larger than " +
                str(kFixedManifestMaxBytes));
  }
  if (h.root != 0 && (h.root < kFixedImageHeaderBytes || h.root >= h.data_end)) {
    return fail("its root " + str(h.root) + " is not inside the data");
  }
  return h;
}

Digest fixed_image_digest(std::span<const std::byte> image) noexcept {
  DigestStream digest;
  const std::byte zeros[16] = {};
  digest.update(image.data(), kFixedDigestAt);
  digest.update(zeros, sizeof zeros);
  digest.update(image.data() + kFixedDigestAt + 16, image.size() - kFixedDigestAt - 16);
  return digest.finish();
}

std::string hex(std::uint64_t value) {
  char text[24];
  std::snprintf(text, sizeof text, "%#llx", static_cast<unsigned long long>(value));
  return text;
}

bool fixed_name_ok(std::string_view name) noexcept {
  if (name.empty() || name.size() > 256) return false;
  for (const char c : name) {
    if (c <= ' ' || c > '~') return false;
  }
  return true;
}

std::string encode_fixed_manifest(const FixedManifest& m) {
  std::string out = "writer " + m.writer + "\nimage " + m.name + "\n";
  for (const FixedImageType& t : m.types) {
    out += "type " + t.name + " " + str(t.size) + " " + str(t.alignment) + " " + str(t.schema_hash) + "\n";
  }
  for (const FixedImageDependency& d : m.dependencies) {
    out += "depends " + d.name + " " + d.digest.hex() + " " + str(d.base) + " " + str(d.data_end) + "\n";
  }
  return out;
}

FixedManifest decode_fixed_manifest(std::string_view text, std::string* why) {
  FixedManifest m;
  why->clear();
  std::unordered_set<std::string_view> type_names;  // views into `text`
  std::unordered_set<std::string_view> dependency_names;
  std::size_t line_number = 0;
  const auto number = [](std::string_view word, std::uint64_t* value) {
    if (word.empty() || word.size() > 20 || (word.size() > 1 && word[0] == '0')) return false;
    const auto [end, error] = std::from_chars(word.data(), word.data() + word.size(), *value);
    return error == std::errc() && end == word.data() + word.size();
  };
  while (!text.empty()) {
    ++line_number;
    const std::size_t end = text.find('\n');
    if (end == std::string_view::npos) {
      *why = "manifest line " + str(line_number) + " does not end with a newline";
      return m;
    }
    const std::string_view line = text.substr(0, end);
    text.remove_prefix(end + 1);
    std::vector<std::string_view> words;
    for (std::size_t at = 0; at <= line.size();) {
      const std::size_t space = std::min(line.find(' ', at), line.size());
      words.push_back(line.substr(at, space - at));
      at = space + 1;
    }
    const auto bad = [&] { *why = "manifest line " + str(line_number) + " is malformed"; };
    if (words[0] == "writer" && line_number == 1 && words.size() == 3 && fixed_name_ok(words[1]) &&
        fixed_name_ok(words[2])) {
      m.writer = std::string(line.substr(7));
    } else if (words[0] == "image" && line_number == 2 && words.size() == 2 && fixed_name_ok(words[1])) {
      m.name = std::string(words[1]);
    } else if (words[0] == "type" && words.size() == 5 && fixed_name_ok(words[1])) {
      FixedImageType t;
      t.name = std::string(words[1]);
      if (!number(words[2], &t.size) || !number(words[3], &t.alignment) ||
          !number(words[4], &t.schema_hash)) {
        bad();
        return m;
      }
      if (!type_names.insert(words[1]).second) {
        *why = "manifest line " + str(line_number) + " names type '" + t.name + "' a second time";
        return m;
      }
      m.types.push_back(std::move(t));
    } else if (words[0] == "depends" && words.size() == 5 && fixed_name_ok(words[1]) &&
               words[2].size() == 32) {
      FixedImageDependency d;
      d.name = std::string(words[1]);
      std::uint64_t base = 0;
      if (!number(words[3], &base) || !number(words[4], &d.data_end)) {
        bad();
        return m;
      }
      d.base = static_cast<std::uintptr_t>(base);
      for (std::size_t i = 0; i < 16; ++i) {
        unsigned value = 0;
        const auto [end2, error] = std::from_chars(words[2].data() + 2 * i, words[2].data() + 2 * i + 2, value, 16);
        if (error != std::errc() || end2 != words[2].data() + 2 * i + 2 ||
            std::isupper(static_cast<unsigned char>(words[2][2 * i])) ||
            std::isupper(static_cast<unsigned char>(words[2][2 * i + 1]))) {
          bad();
          return m;
        }
        d.digest.bytes[i] = static_cast<std::byte>(value);
      }
      if (!dependency_names.insert(words[1]).second) {
        *why = "manifest line " + str(line_number) + " names dependency '" + d.name + "' a second time";
        return m;
      }
      m.dependencies.push_back(std::move(d));
    } else {
      bad();
      return m;
    }
  }
  if (m.writer.empty() || m.name.empty()) *why = "the manifest does not say who wrote the image and its name";
  return m;
}

FixedManifest read_fixed_image(const SealedImage& image, FixedHeader* header, bool* header_ok,
                               std::string* why) {
  *header_ok = false;
  const std::uint64_t size = image.size();
  if (size < kFixedImageHeaderBytes) {
    *why = "not a fixed image: it is " + str(size) + " bytes, less than a header";
    return {};
  }
  std::vector<std::byte> bytes(kFixedImageHeaderBytes);
  std::size_t got = 0;
  if (const int err = os::pread_full(image.fd(), bytes.data(), bytes.size(), 0, &got);
      err != 0 || got != bytes.size()) {
    *why = "reading its header: " + std::string(err != 0 ? std::strerror(err) : "short read");
    return {};
  }
  *header = decode_fixed_header(bytes, size, why);
  if (!why->empty()) {
    *why = "not a fixed image, or a malformed one: " + *why;
    return {};
  }
  *header_ok = true;
  std::string text(header->manifest_bytes, '\0');
  if (const int err = os::pread_full(image.fd(), text.data(), text.size(), header->manifest, &got);
      err != 0 || got != text.size()) {
    *why = "reading its manifest: " + std::string(err != 0 ? std::strerror(err) : "short read");
    return {};
  }
  return decode_fixed_manifest(text, why);
}

bool fixed_image_damaged(const SealedImage& image, const FixedHeader& header) {
  const void* at = nullptr;
  if (os::map_readonly(image.fd(), header.size, &at) != 0) return false;  // cannot tell
  const bool damaged =
      fixed_image_digest({static_cast<const std::byte*>(at), header.size}) != header.digest;
  (void)os::munmap(at, header.size);
  return damaged;
}

}  // namespace mapwright::detail
