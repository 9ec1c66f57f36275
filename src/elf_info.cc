#include "elf_info.h"

#include <elf.h>
#include <link.h>

#include <algorithm>
#include <cstring>
#include <limits>

namespace mapwright::detail {
namespace {

using Ehdr = ElfW(Ehdr);
using Phdr = ElfW(Phdr);
using Dyn = ElfW(Dyn);

constexpr unsigned char kHostClass = sizeof(void*) == 8 ? ELFCLASS64 : ELFCLASS32;
constexpr unsigned char kHostData =
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? ELFDATA2LSB : ELFDATA2MSB;
constexpr std::size_t kMaxString = 4096;            // longest SONAME/NEEDED read
constexpr std::uint64_t kMaxDynamicBytes = 1 << 20;  // read of the dynamic section
#ifndef DF_1_PIE
constexpr std::uint64_t DF_1_PIE = 0x08000000;
#endif

std::string str(std::uint64_t value) { return std::to_string(value); }

const char* class_name(unsigned char value) {
  switch (value) {
    case ELFCLASS32: return "ELFCLASS32 (32-bit)";
    case ELFCLASS64: return "ELFCLASS64 (64-bit)";
    default: return nullptr;
  }
}

const char* data_name(unsigned char value) {
  switch (value) {
    case ELFDATA2LSB: return "ELFDATA2LSB (little-endian)";
    case ELFDATA2MSB: return "ELFDATA2MSB (big-endian)";
    default: return nullptr;
  }
}

std::string named_or_number(const char* name, unsigned value) {
  return name != nullptr ? std::string(name) : "value " + str(value);
}

// a + b <= limit, without overflow.
bool fits(std::uint64_t a, std::uint64_t b, std::uint64_t limit) {
  return a <= limit && b <= limit - a;
}

class Reader {
 public:
  Reader(std::uint64_t size, const ElfReadAt& read) : size_(size), read_(read) {}

  std::uint64_t size() const noexcept { return size_; }

  // Exactly `length` bytes at `offset`, or false (out of bounds or a short read).
  bool get(std::uint64_t offset, void* buffer, std::size_t length) const {
    if (!fits(offset, length, size_)) return false;
    if (length == 0) return true;
    return read_(offset, buffer, length) == length;
  }

  // A NUL-terminated string starting at `offset` and ending before `limit` (<= size), at most
  // kMaxString bytes; false if there is no NUL in that range.
  bool string_at(std::uint64_t offset, std::uint64_t limit, std::string* out) const {
    limit = std::min(limit, size_);
    if (offset >= limit) return false;
    const std::size_t length =
        static_cast<std::size_t>(std::min<std::uint64_t>(kMaxString + 1, limit - offset));
    std::string buffer(length, '\0');
    std::size_t got = read_(offset, buffer.data(), length);
    if (got > length) got = length;
    const std::size_t end = buffer.find('\0');
    if (end == std::string::npos || end >= got) return false;
    buffer.resize(end);
    *out = std::move(buffer);
    return true;
  }

 private:
  std::uint64_t size_;
  const ElfReadAt& read_;
};

void problem(ElfInfo& info, ElfProblem what, std::string reason) {
  info.problem = what;
  info.reason = std::move(reason);
}

// The file offset of the memory address `address`, through the PT_LOAD segment holding it in
// its file bytes; `end` receives the end of that segment's file bytes. False if none does.
bool file_offset_of(const std::vector<Phdr>& loads, std::uint64_t address, std::uint64_t* offset,
                    std::uint64_t* end) {
  for (const Phdr& load : loads) {
    if (address >= load.p_vaddr && address - load.p_vaddr < load.p_filesz) {
      *offset = load.p_offset + (address - load.p_vaddr);
      *end = load.p_offset + load.p_filesz;  // checked in bounds by the caller
      return true;
    }
  }
  return false;
}

// Reads DT_SONAME, DT_NEEDED and DT_FLAGS_1. Leaves info.dynamic_read false if the dynamic
// section or its strings cannot be read.
void read_dynamic(const Reader& reader, const Phdr& dynamic, const std::vector<Phdr>& loads,
                  ElfInfo& info) {
  const std::uint64_t bytes = std::min<std::uint64_t>(dynamic.p_filesz, kMaxDynamicBytes);
  std::vector<Dyn> entries(static_cast<std::size_t>(bytes / sizeof(Dyn)));
  if (!reader.get(dynamic.p_offset, entries.data(), entries.size() * sizeof(Dyn))) return;
  bool have_strtab = false;
  std::uint64_t strtab = 0;
  std::uint64_t strsz = std::numeric_limits<std::uint64_t>::max();
  bool have_soname = false;
  std::uint64_t soname = 0;
  std::vector<std::uint64_t> needed;
  bool terminated = false;
  for (const Dyn& entry : entries) {
    if (entry.d_tag == DT_NULL) {
      terminated = true;
      break;
    }
    switch (entry.d_tag) {
      case DT_STRTAB:
        have_strtab = true;
        strtab = entry.d_un.d_ptr;
        break;
      case DT_STRSZ: strsz = entry.d_un.d_val; break;
      case DT_SONAME:
        have_soname = true;
        soname = entry.d_un.d_val;
        break;
      case DT_NEEDED: needed.push_back(entry.d_un.d_val); break;
      case DT_FLAGS_1:
        if ((entry.d_un.d_val & DF_1_PIE) != 0 && info.problem == ElfProblem::kNone) {
          problem(info, ElfProblem::kExecutable,
                  "a position-independent executable (DT_FLAGS_1 has DF_1_PIE), not a shared "
                  "library: the dynamic loader refuses to load one");
        }
        break;
      default: break;
    }
  }
  if (!terminated) return;  // the dynamic linker would read past the section: unknown
  if (!have_soname && needed.empty()) {
    info.dynamic_read = true;  // no strings needed
    return;
  }
  if (!have_strtab) return;
  std::uint64_t table = 0;
  std::uint64_t table_end = 0;
  if (!file_offset_of(loads, strtab, &table, &table_end)) return;
  if (strsz != std::numeric_limits<std::uint64_t>::max() && fits(table, strsz, table_end)) {
    table_end = table + strsz;
  }
  const auto read_string = [&](std::uint64_t at, std::string* out) {
    return at < table_end - table && reader.string_at(table + at, table_end, out);
  };
  // Into locals: all of it is known, or none.
  std::string soname_text;
  if (have_soname && !read_string(soname, &soname_text)) return;
  std::vector<std::string> names;
  for (const std::uint64_t at : needed) {
    std::string name;
    if (!read_string(at, &name)) return;
    names.push_back(std::move(name));
  }
  info.has_soname = have_soname;
  info.soname = std::move(soname_text);
  info.needed = std::move(names);
  info.dynamic_read = true;
}

}  // namespace

std::string elf_machine_name(std::uint16_t machine) {
  switch (machine) {
    case EM_386: return "EM_386";
    case EM_X86_64: return "EM_X86_64";
    case EM_AARCH64: return "EM_AARCH64";
    case EM_ARM: return "EM_ARM";
    case EM_RISCV: return "EM_RISCV";
    case EM_PPC: return "EM_PPC";
    case EM_PPC64: return "EM_PPC64";
    case EM_S390: return "EM_S390";
    case EM_MIPS: return "EM_MIPS";
    case EM_SPARCV9: return "EM_SPARCV9";
    case EM_IA_64: return "EM_IA_64";
    case EM_LOONGARCH: return "EM_LOONGARCH";
    case EM_NONE: return "EM_NONE";
    default: return "machine " + str(machine);
  }
}

std::string elf_type_name(std::uint16_t type) {
  switch (type) {
    case ET_NONE: return "ET_NONE";
    case ET_REL: return "ET_REL";
    case ET_EXEC: return "ET_EXEC";
    case ET_DYN: return "ET_DYN";
    case ET_CORE: return "ET_CORE";
    default: return "type " + str(type);
  }
}

std::uint16_t host_elf_machine() noexcept {
#if defined(__x86_64__)
  return EM_X86_64;
#elif defined(__aarch64__)
  return EM_AARCH64;
#elif defined(__i386__)
  return EM_386;
#elif defined(__arm__)
  return EM_ARM;
#elif defined(__riscv)
  return EM_RISCV;
#elif defined(__powerpc64__)
  return EM_PPC64;
#elif defined(__s390x__)
  return EM_S390;
#elif defined(__loongarch__)
  return EM_LOONGARCH;
#else
  return 0;  // unknown: not checked
#endif
}

ElfInfo read_elf(std::uint64_t size, const ElfReadAt& read) {
  ElfInfo info;
  const Reader reader(size, read);
  unsigned char ident[EI_NIDENT] = {};
  const std::size_t ident_got = static_cast<std::size_t>(std::min<std::uint64_t>(size, EI_NIDENT));
  if (ident_got != 0 && !reader.get(0, ident, ident_got)) {
    problem(info, ElfProblem::kTooShort, "truncated: the file ends before its ELF header");
    return info;
  }
  if (ident_got < SELFMAG || std::memcmp(ident, ELFMAG, SELFMAG) != 0) {
    if (size < sizeof(Ehdr)) {
      problem(info, ElfProblem::kTooShort,
              "not an ELF file (" + str(size) + " bytes, no ELF magic number)");
    } else {
      problem(info, ElfProblem::kNotElf, "not an ELF file (no ELF magic number)");
    }
    return info;
  }
  if (ident_got < EI_NIDENT) {
    problem(info, ElfProblem::kTooShort,
            "truncated ELF: the file has " + str(size) + " bytes, its ELF header needs " +
                str(sizeof(Ehdr)));
    return info;
  }
  if (ident[EI_CLASS] != kHostClass) {
    problem(info, ElfProblem::kWrongClass,
            "built as " + named_or_number(class_name(ident[EI_CLASS]), ident[EI_CLASS]) +
                ", this system loads " + class_name(kHostClass));
    return info;
  }
  if (ident[EI_DATA] != kHostData) {
    problem(info, ElfProblem::kWrongByteOrder,
            "built as " + named_or_number(data_name(ident[EI_DATA]), ident[EI_DATA]) +
                ", this system loads " + data_name(kHostData));
    return info;
  }
  Ehdr header;
  if (!reader.get(0, &header, sizeof header)) {
    problem(info, ElfProblem::kTooShort,
            "truncated ELF: the file has " + str(size) + " bytes, its ELF header needs " +
                str(sizeof(Ehdr)));
    return info;
  }
  info.type = header.e_type;
  info.machine = header.e_machine;
  if (ident[EI_VERSION] != EV_CURRENT || header.e_version != EV_CURRENT) {
    problem(info, ElfProblem::kBadVersion, "unknown ELF version " + str(header.e_version));
    return info;
  }
  if (header.e_type != ET_DYN) {
    problem(info, ElfProblem::kNotShared,
            "not a shared library (ELF type " + elf_type_name(header.e_type) + ")");
    return info;
  }
  if (const std::uint16_t host = host_elf_machine(); host != 0 && header.e_machine != host) {
    problem(info, ElfProblem::kWrongMachine,
            "built for machine " + elf_machine_name(header.e_machine) + ", this system runs " +
                elf_machine_name(host));
    return info;
  }
  if (header.e_phentsize != sizeof(Phdr)) {
    problem(info, ElfProblem::kBadHeaderSize,
            "malformed ELF: program header entries of " + str(header.e_phentsize) +
                " bytes, expected " + str(sizeof(Phdr)));
    return info;
  }
  const std::uint64_t table_bytes = std::uint64_t{header.e_phnum} * sizeof(Phdr);
  if (!fits(header.e_phoff, table_bytes, size)) {
    problem(info, ElfProblem::kTruncated,
            "truncated ELF: the program headers end at byte " +
                str(std::uint64_t{header.e_phoff} + table_bytes) + ", the file has " + str(size));
    return info;
  }
  std::vector<Phdr> headers(header.e_phnum);
  if (!reader.get(header.e_phoff, headers.data(), static_cast<std::size_t>(table_bytes))) {
    problem(info, ElfProblem::kTruncated, "truncated ELF: short read of the program headers");
    return info;
  }
  std::vector<Phdr> loads;
  const Phdr* dynamic = nullptr;
  for (const Phdr& segment : headers) {
    if (segment.p_type == PT_LOAD) {
      if (!fits(segment.p_offset, segment.p_filesz, size)) {
        problem(info, ElfProblem::kTruncated,
                "truncated ELF: a loadable segment ends at byte " +
                    (fits(segment.p_offset, segment.p_filesz, UINT64_MAX)
                         ? str(std::uint64_t{segment.p_offset} + segment.p_filesz)
                         : std::string("2^64 or later")) +
                    ", the file has " + str(size));
        return info;
      }
      loads.push_back(segment);
    } else if (segment.p_type == PT_DYNAMIC && dynamic == nullptr) {
      dynamic = &segment;
    }
  }
  if (loads.empty()) {
    problem(info, ElfProblem::kNoLoad, "malformed ELF: no loadable segment (PT_LOAD)");
    return info;
  }
  if (dynamic == nullptr) {
    problem(info, ElfProblem::kNoDynamic, "malformed ELF: no dynamic section (PT_DYNAMIC)");
    return info;
  }
  if (!fits(dynamic->p_offset, dynamic->p_filesz, size)) {
    problem(info, ElfProblem::kTruncated,
            "truncated ELF: the dynamic section ends past the end of the file (" + str(size) +
                " bytes)");
    return info;
  }
  read_dynamic(reader, *dynamic, loads, info);
  return info;
}

ElfInfo read_elf(std::span<const std::byte> bytes) {
  return read_elf(bytes.size(), [bytes](std::uint64_t offset, void* buffer, std::size_t length) {
    if (offset >= bytes.size()) return std::size_t{0};
    length = static_cast<std::size_t>(std::min<std::uint64_t>(length, bytes.size() - offset));
    std::memcpy(buffer, bytes.data() + offset, length);
    return length;
  });
}

}  // namespace mapwright::detail
