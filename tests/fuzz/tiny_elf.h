// tests/fuzz/tiny_elf.h — the smallest ELF shared object that src/elf_info.h accepts: an ELF
// header, one PT_LOAD covering the whole file, a PT_DYNAMIC with DT_SONAME, DT_NEEDED,
// DT_STRTAB and DT_STRSZ, and the string table. No code, no symbols: nothing ever dlopen()s it.
// For the seed corpora (make_seeds.cc: wrapper library entries, elf_info_fuzz inputs) and tests.
#pragma once

#include <link.h>

#include <cstring>
#include <string>
#include <vector>

namespace mapwright::fuzz {

// `soname` empty: no DT_SONAME.
inline std::string tiny_elf(const std::string& soname, const std::vector<std::string>& needed = {}) {
  std::string strings(1, '\0');
  std::vector<ElfW(Dyn)> dynamic;
  if (!soname.empty()) {
    dynamic.push_back({DT_SONAME, {strings.size()}});
    strings += soname + '\0';
  }
  for (const std::string& name : needed) {
    dynamic.push_back({DT_NEEDED, {strings.size()}});
    strings += name + '\0';
  }
  const std::size_t dynamic_offset = sizeof(ElfW(Ehdr)) + 2 * sizeof(ElfW(Phdr));
  const std::size_t strings_offset = dynamic_offset + (dynamic.size() + 3) * sizeof(ElfW(Dyn));
  dynamic.push_back({DT_STRTAB, {strings_offset}});  // address == offset: PT_LOAD at 0
  dynamic.push_back({DT_STRSZ, {strings.size()}});
  dynamic.push_back({DT_NULL, {0}});
  const std::size_t size = strings_offset + strings.size();

  ElfW(Ehdr) header{};
  std::memcpy(header.e_ident, ELFMAG, SELFMAG);
  header.e_ident[EI_CLASS] = sizeof(void*) == 8 ? ELFCLASS64 : ELFCLASS32;
  header.e_ident[EI_DATA] = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? ELFDATA2LSB : ELFDATA2MSB;
  header.e_ident[EI_VERSION] = EV_CURRENT;
  header.e_type = ET_DYN;
#if defined(__x86_64__)
  header.e_machine = EM_X86_64;
#elif defined(__aarch64__)
  header.e_machine = EM_AARCH64;
#elif defined(__i386__)
  header.e_machine = EM_386;
#endif
  header.e_version = EV_CURRENT;
  header.e_phoff = sizeof(ElfW(Ehdr));
  header.e_ehsize = sizeof(ElfW(Ehdr));
  header.e_phentsize = sizeof(ElfW(Phdr));
  header.e_phnum = 2;

  ElfW(Phdr) segments[2]{};
  segments[0].p_type = PT_LOAD;
  segments[0].p_flags = PF_R;
  segments[0].p_filesz = segments[0].p_memsz = size;
  segments[0].p_align = 4096;
  segments[1].p_type = PT_DYNAMIC;
  segments[1].p_flags = PF_R;
  segments[1].p_offset = segments[1].p_vaddr = dynamic_offset;
  segments[1].p_filesz = segments[1].p_memsz = dynamic.size() * sizeof(ElfW(Dyn));
  segments[1].p_align = alignof(ElfW(Dyn));

  std::string bytes(size, '\0');
  std::memcpy(bytes.data(), &header, sizeof header);
  std::memcpy(bytes.data() + sizeof header, segments, sizeof segments);
  std::memcpy(bytes.data() + dynamic_offset, dynamic.data(), dynamic.size() * sizeof(ElfW(Dyn)));
  std::memcpy(bytes.data() + strings_offset, strings.data(), strings.size());
  return bytes;
}

}  // namespace mapwright::fuzz
