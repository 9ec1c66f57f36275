// src/elf_info.h — what the dynamic linker will think of a shared library's bytes, read with
// every access bounds-checked (the bytes are untrusted: a wrapper entry, a file given to
// `mapwright pack`). Shared by the wrapper writer (refuses at pack what dlopen() certainly
// refuses, and records SONAME and DT_NEEDED for the dependency check) and the loader (refuses
// a truncated ELF before dlopen() maps past the end of the image).
//
// What is read: the ELF header (class, byte order, version, type, machine), the program
// headers (in bounds, the expected entry size), every PT_LOAD (its file bytes inside the
// image), PT_DYNAMIC (inside the image), and from the dynamic section DT_STRTAB, DT_STRSZ,
// DT_SONAME, DT_NEEDED and DT_FLAGS_1; the dynamic string table is found by mapping
// DT_STRTAB's address through the PT_LOAD segments, as the dynamic linker would see it in
// memory. Nothing is ever read outside [0, size), and the work is bounded (at most 65535
// program headers, the dynamic section's size, strings of at most 4096 bytes).
//
// Only an ELF of this process's class and byte order is read past its header; the rest is
// refused (Problem), which is what dlopen() would do with it too.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace mapwright::detail {

// Why dlopen() would certainly refuse the bytes (kNone: nothing found). In the order checked.
enum class ElfProblem {
  kNone,
  kTooShort,        // shorter than an ELF header
  kNotElf,          // no ELF magic number
  kWrongClass,      // ELFCLASS32 in a 64-bit process, or the reverse
  kWrongByteOrder,  // big-endian in a little-endian process, or the reverse
  kBadVersion,      // e_ident[EI_VERSION] or e_version is not EV_CURRENT
  kNotShared,       // e_type is not ET_DYN (ET_REL, ET_EXEC, ET_CORE...)
  kWrongMachine,    // e_machine is not this process's
  kBadHeaderSize,   // e_phentsize is not sizeof(Elf_Phdr)
  kTruncated,       // program headers, a PT_LOAD's file bytes or PT_DYNAMIC past the end
  kNoLoad,          // no PT_LOAD segment
  kNoDynamic,       // no PT_DYNAMIC segment ("object file has no dynamic section")
  kExecutable,      // DT_FLAGS_1 has DF_1_PIE: a position-independent executable
};

struct ElfInfo {
  ElfProblem problem = ElfProblem::kNone;
  // What the problem is, for a person: "not a shared library (ELF type ET_REL)", "built for
  // machine EM_AARCH64, this system runs EM_X86_64", "truncated: a loadable segment ends at
  // byte 9000, the file has 4096 bytes". Empty when problem is kNone.
  std::string reason;

  std::uint16_t type = 0;     // e_type, when the header was read
  std::uint16_t machine = 0;  // e_machine, when the header was read
  // Read from the dynamic section. dynamic_read is false when it could not be (no PT_DYNAMIC,
  // or DT_STRTAB or a string outside the image): then the SONAME and NEEDED are unknown, not
  // absent.
  bool dynamic_read = false;
  bool has_soname = false;
  std::string soname;
  std::vector<std::string> needed;  // DT_NEEDED, in order
};

// Reads up to `length` bytes at `offset` (always < size) into `buffer`; returns how many (fewer
// only if the bytes end early: that reads as a truncated image). May throw.
using ElfReadAt = std::function<std::size_t(std::uint64_t offset, void* buffer, std::size_t length)>;

// Reads the image of `size` bytes through `read`.
ElfInfo read_elf(std::uint64_t size, const ElfReadAt& read);
// The same over bytes in memory.
ElfInfo read_elf(std::span<const std::byte> bytes);

// "EM_X86_64", "EM_AARCH64", ... or "machine 1234" for one this file does not name.
std::string elf_machine_name(std::uint16_t machine);
// "ET_REL", "ET_EXEC", "ET_DYN", "ET_CORE", "ET_NONE", or "type 1234".
std::string elf_type_name(std::uint16_t type);
// The e_machine of this process (0 if this file does not know it).
std::uint16_t host_elf_machine() noexcept;

}  // namespace mapwright::detail
