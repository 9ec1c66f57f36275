// tests/elf_info_test.cc — src/elf_info.h: what it reads from real libraries (SONAME, DT_NEEDED),
// what it refuses (an object file, an executable, another machine, class or byte order, every
// truncation), and that it never reads outside the image whatever the bytes say.
#include "elf_info.h"

#include <dlfcn.h>
#include <elf.h>
#include <gtest/gtest.h>
#include <link.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "child.h"
#include "content.h"
#include "fixture_paths.h"
#include "mapwright/error.h"
#include "mapwright/wrapper.h"
#include "fuzz/tiny_elf.h"

namespace mapwright::detail {
namespace {

std::vector<std::byte> bytes_of(const char* path) { return test::read_file_bytes(path); }

// read_elf() over `bytes`, failing the test if it ever asks for a byte outside them.
ElfInfo read_checked(const std::vector<std::byte>& bytes) {
  const ElfReadAt read = [&](std::uint64_t offset, void* buffer, std::size_t length) {
    EXPECT_LT(offset, bytes.size()) << "read at " << offset << " of " << length;
    EXPECT_LE(length, bytes.size() - std::min<std::uint64_t>(offset, bytes.size()))
        << "read at " << offset << " of " << length;
    if (offset >= bytes.size()) return std::size_t{0};
    length = std::min<std::size_t>(length, bytes.size() - offset);
    std::memcpy(buffer, bytes.data() + offset, length);
    return length;
  };
  return read_elf(bytes.size(), read);
}

bool contains(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

TEST(ElfInfo, ReadsSonameAndNeededOfRealLibraries) {
  const ElfInfo a = read_checked(bytes_of(MAPWRIGHT_FIXTURE_A));
  EXPECT_EQ(a.problem, ElfProblem::kNone) << a.reason;
  EXPECT_TRUE(a.dynamic_read);
  EXPECT_TRUE(a.has_soname);
  EXPECT_EQ(a.soname, "libmwfixture_a.so");
  EXPECT_EQ(a.type, ET_DYN);
  EXPECT_EQ(a.machine, host_elf_machine());

  const ElfInfo b = read_checked(bytes_of(MAPWRIGHT_FIXTURE_B));
  EXPECT_EQ(b.problem, ElfProblem::kNone) << b.reason;
  EXPECT_EQ(b.soname, "libmwfixture_b.so");
  EXPECT_TRUE(contains(b.needed, "libmwfixture_a.so"));
  EXPECT_TRUE(contains(b.needed, "libc.so.6"));

  const ElfInfo fake_kj = read_checked(bytes_of(MAPWRIGHT_FIXTURE_FAKE_KJ));
  EXPECT_EQ(fake_kj.soname, "libkj-0.9.2.so");
  const ElfInfo kj_user = read_checked(bytes_of(MAPWRIGHT_FIXTURE_KJ_USER));
  EXPECT_TRUE(contains(kj_user.needed, "libkj-0.9.2.so"));

  const ElfInfo no_soname = read_checked(bytes_of(MAPWRIGHT_FIXTURE_NO_SONAME));
  EXPECT_EQ(no_soname.problem, ElfProblem::kNone) << no_soname.reason;
  EXPECT_TRUE(no_soname.dynamic_read);
  EXPECT_FALSE(no_soname.has_soname);
  EXPECT_EQ(no_soname.soname, "");
}

TEST(ElfInfo, RefusesWhatDlopenRefuses) {
  const ElfInfo object = read_checked(bytes_of(MAPWRIGHT_FIXTURE_OBJECT));
  EXPECT_EQ(object.problem, ElfProblem::kNotShared);
  EXPECT_EQ(object.reason, "not a shared library (ELF type ET_REL)");

  // This test program: a position-independent executable (ET_DYN with DF_1_PIE), or an
  // ET_EXEC when it was linked without -pie.
  const ElfInfo self = read_checked(test::read_file_bytes("/proc/self/exe"));
  EXPECT_TRUE(self.problem == ElfProblem::kExecutable || self.problem == ElfProblem::kNotShared)
      << self.reason;

  const std::vector<std::byte> a = bytes_of(MAPWRIGHT_FIXTURE_A);
  {
    std::vector<std::byte> other = a;
    auto* header = reinterpret_cast<ElfW(Ehdr)*>(other.data());
    header->e_machine = header->e_machine == EM_AARCH64 ? EM_X86_64 : EM_AARCH64;
    const ElfInfo info = read_checked(other);
    EXPECT_EQ(info.problem, ElfProblem::kWrongMachine);
    EXPECT_EQ(info.reason, "built for machine " + elf_machine_name(header->e_machine) +
                               ", this system runs " + elf_machine_name(host_elf_machine()));
  }
  {
    std::vector<std::byte> other = a;
    other[EI_CLASS] = std::byte{sizeof(void*) == 8 ? ELFCLASS32 : ELFCLASS64};
    const ElfInfo info = read_checked(other);
    EXPECT_EQ(info.problem, ElfProblem::kWrongClass);
    EXPECT_NE(info.reason.find(sizeof(void*) == 8 ? "ELFCLASS32" : "ELFCLASS64"), std::string::npos)
        << info.reason;
  }
  {
    std::vector<std::byte> other = a;
    other[EI_DATA] = other[EI_DATA] == std::byte{ELFDATA2LSB} ? std::byte{ELFDATA2MSB} : std::byte{ELFDATA2LSB};
    const ElfInfo info = read_checked(other);
    EXPECT_EQ(info.problem, ElfProblem::kWrongByteOrder);
    EXPECT_NE(info.reason.find("endian"), std::string::npos) << info.reason;
  }
  {
    const std::string text = "#!/bin/sh\necho this is not a library, only some text, long enough\n";
    const ElfInfo info = read_elf(std::as_bytes(std::span(text)));
    EXPECT_EQ(info.problem, ElfProblem::kNotElf);
    EXPECT_NE(info.reason.find("no ELF magic number"), std::string::npos) << info.reason;
  }
  EXPECT_EQ(read_elf(std::span<const std::byte>()).problem, ElfProblem::kTooShort);
}

// Every prefix of a real library shorter than the end of its last loadable segment is refused
// (the dynamic linker would map past the end of the file), and no prefix is read past its end.
TEST(ElfInfo, EveryTruncationIsRefused) {
  const std::vector<std::byte> a = bytes_of(MAPWRIGHT_FIXTURE_A);
  const auto* header = reinterpret_cast<const ElfW(Ehdr)*>(a.data());
  const auto* headers = reinterpret_cast<const ElfW(Phdr)*>(a.data() + header->e_phoff);
  std::uint64_t needed = header->e_phoff + std::uint64_t{header->e_phnum} * sizeof(ElfW(Phdr));
  for (int i = 0; i < header->e_phnum; ++i) {
    if (headers[i].p_type == PT_LOAD || headers[i].p_type == PT_DYNAMIC) {
      needed = std::max<std::uint64_t>(needed, headers[i].p_offset + headers[i].p_filesz);
    }
  }
  ASSERT_LE(needed, a.size());
  for (std::size_t size = 0; size <= a.size(); ++size) {
    const std::vector<std::byte> prefix(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(size));
    const ElfInfo info = read_checked(prefix);
    if (size < needed) {
      ASSERT_NE(info.problem, ElfProblem::kNone) << "a prefix of " << size << " bytes";
      if (size >= sizeof(ElfW(Ehdr))) {
        ASSERT_EQ(info.problem, ElfProblem::kTruncated) << size << ": " << info.reason;
        ASSERT_EQ(info.reason.rfind("truncated ELF", 0), 0u) << info.reason;
      }
    } else {
      ASSERT_EQ(info.problem, ElfProblem::kNone) << size << ": " << info.reason;
    }
  }
}

// Random damage to the headers, the program headers and the dynamic section: read_elf stays in
// bounds (read_checked fails the test otherwise) and never claims a problem-free ELF that has
// none of the basics.
TEST(ElfInfo, DamagedHeadersStayInBounds) {
  const std::vector<std::byte> a = bytes_of(MAPWRIGHT_FIXTURE_B);
  const auto* header = reinterpret_cast<const ElfW(Ehdr)*>(a.data());
  std::uint64_t dynamic_offset = 0;
  std::uint64_t dynamic_size = 0;
  const auto* headers = reinterpret_cast<const ElfW(Phdr)*>(a.data() + header->e_phoff);
  for (int i = 0; i < header->e_phnum; ++i) {
    if (headers[i].p_type == PT_DYNAMIC) {
      dynamic_offset = headers[i].p_offset;
      dynamic_size = headers[i].p_filesz;
    }
  }
  ASSERT_NE(dynamic_size, 0u);
  const std::uint64_t table_end =
      header->e_phoff + std::uint64_t{header->e_phnum} * sizeof(ElfW(Phdr));
  std::mt19937_64 random(11);
  for (int round = 0; round < 20000; ++round) {
    std::vector<std::byte> damaged = a;
    const int flips = 1 + static_cast<int>(random() % 4);
    for (int f = 0; f < flips; ++f) {
      std::uint64_t at = 0;
      switch (random() % 3) {
        case 0: at = random() % sizeof(ElfW(Ehdr)); break;
        case 1: at = header->e_phoff + random() % (table_end - header->e_phoff); break;
        default: at = dynamic_offset + random() % dynamic_size; break;
      }
      damaged[at] = static_cast<std::byte>(random());
    }
    const ElfInfo info = read_checked(damaged);
    if (info.problem == ElfProblem::kNone) {
      ASSERT_EQ(info.type, ET_DYN);
      ASSERT_EQ(info.machine, host_elf_machine());
    } else {
      ASSERT_FALSE(info.reason.empty());
    }
    if (::testing::Test::HasFailure()) break;
  }
}

// The seeds' tiny libraries (tests/fuzz/tiny_elf.h): the strings are found through DT_STRTAB's
// address, and a table cut short leaves the names unknown rather than wrong.
TEST(ElfInfo, ReadsTheTinySeedLibraries) {
  const auto info_of = [](const std::string& bytes) {
    return read_checked(std::vector<std::byte>(reinterpret_cast<const std::byte*>(bytes.data()),
                                               reinterpret_cast<const std::byte*>(bytes.data()) + bytes.size()));
  };
  const ElfInfo full = info_of(fuzz::tiny_elf("liba.so.1", {"libb.so", "libc.so.6"}));
  EXPECT_EQ(full.problem, ElfProblem::kNone) << full.reason;
  EXPECT_EQ(full.soname, "liba.so.1");
  EXPECT_EQ(full.needed, (std::vector<std::string>{"libb.so", "libc.so.6"}));
  const ElfInfo none = info_of(fuzz::tiny_elf("", {"libb.so"}));
  EXPECT_TRUE(none.dynamic_read);
  EXPECT_FALSE(none.has_soname);
  EXPECT_EQ(none.needed, std::vector<std::string>{"libb.so"});
  std::string cut = fuzz::tiny_elf("libcut.so", {"libx.so"});
  cut.resize(cut.size() - 3);  // inside "libx.so": PT_LOAD now ends past the file
  EXPECT_EQ(info_of(cut).problem, ElfProblem::kTruncated);
}

// The writer reads a library's headers across its chunks, which for a stream grow (64 KiB,
// 128 KiB, ...): libstdc++ (~2 MiB, its dynamic section near the end) through a pipe, as the
// dependent of a library without a SONAME, is refused naming its own DT_NEEDED names; cut
// short, it is refused as truncated.
TEST(ElfInfo, TheWriterReadsAStreamedLibraryAcrossItsChunks) {
  std::string cxx_path;
  if (void* handle = dlopen("libstdc++.so.6", RTLD_LAZY | RTLD_NOLOAD); handle != nullptr) {
    link_map* map = nullptr;
    if (dlinfo(handle, RTLD_DI_LINKMAP, &map) == 0 && map != nullptr) cxx_path = map->l_name;
    dlclose(handle);
  }
  if (cxx_path.empty()) GTEST_SKIP() << "libstdc++.so.6 is not loaded";
  const std::vector<std::byte> cxx = test::read_file_bytes(cxx_path);
  ASSERT_GT(cxx.size(), 512u * 1024);
  const ElfInfo expected = read_elf(cxx);
  ASSERT_EQ(expected.problem, ElfProblem::kNone) << expected.reason;
  ASSERT_FALSE(expected.needed.empty());

  const auto stream = [](WrapperWriter& writer, std::span<const std::byte> bytes,
                         std::vector<std::string> depends) {
    int ends[2];
    ASSERT_EQ(::pipe(ends), 0);
    std::thread feeder([&] {
      std::size_t done = 0;
      while (done < bytes.size()) {
        const ssize_t n = ::write(ends[1], bytes.data() + done, bytes.size() - done);
        if (n <= 0) break;
        done += static_cast<std::size_t>(n);
      }
      ::close(ends[1]);
    });
    try {
      writer.add_library_stream("cxx", ends[0], "a pipe", std::move(depends));
    } catch (...) {
      feeder.join();
      ::close(ends[0]);
      throw;
    }
    feeder.join();
    ::close(ends[0]);
  };
  test::TempDir dir;
  {
    WrapperWriter writer(dir / "w.mwr");
    writer.add_library("plain", std::filesystem::path(MAPWRIGHT_FIXTURE_NO_SONAME));
    stream(writer, cxx, {"plain"});
    try {
      writer.publish();
      ADD_FAILURE() << "a dependency without a SONAME was accepted";
    } catch (const Error& e) {
      const std::string what = e.what();
      for (const std::string& needed : expected.needed) {
        EXPECT_NE(what.find("'" + needed + "'"), std::string::npos) << what;
      }
    }
  }
  {
    WrapperWriter writer(dir / "w.mwr");
    try {
      stream(writer, std::span(cxx).first(cxx.size() * 3 / 4), {});
      ADD_FAILURE() << "a truncated library was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("entry 'cxx' from 'a pipe': truncated ELF"),
                std::string::npos)
          << e.what();
    }
  }
}

TEST(ElfInfo, NamesMachinesAndTypes) {
  EXPECT_EQ(elf_machine_name(EM_X86_64), "EM_X86_64");
  EXPECT_EQ(elf_machine_name(EM_AARCH64), "EM_AARCH64");
  EXPECT_EQ(elf_machine_name(9999), "machine 9999");
  EXPECT_EQ(elf_type_name(ET_REL), "ET_REL");
  EXPECT_EQ(elf_type_name(ET_EXEC), "ET_EXEC");
  EXPECT_EQ(elf_type_name(0x1234), "type 4660");
}

}  // namespace
}  // namespace mapwright::detail
