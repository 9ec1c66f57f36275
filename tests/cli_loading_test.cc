// tests/cli_loading_test.cc — `mapwright pack` refuses what can never load (issue 11, "What to
// build" item 4), `mapwright run` loads a wrapper's libraries into a link-map namespace of their
// own (item 5), and run's loader messages (item 6): dlerror()'s own text, and how to add a
// missing dependency.
#include <elf.h>
#include <link.h>

#include <string>
#include <vector>

#include "cli.h"

namespace mapwright {
namespace {

using namespace cli_test;  // NOLINT(google-build-using-namespace): the tests' own toolkit

class CliLoadingTest : public CliTest {
 protected:
  // A copy of fixture a with `edit` applied to its bytes, as a file.
  fs::path edited_a(const std::string& name, const std::function<void(std::string&)>& edit) {
    std::string bytes = read_file(MAPWRIGHT_FIXTURE_A);
    edit(bytes);
    const fs::path file = path(name);
    write_file(file, bytes);
    return file;
  }

  ElfW(Ehdr)* header(std::string& bytes) { return reinterpret_cast<ElfW(Ehdr)*>(bytes.data()); }
};

// A wrapper library whose SONAME is libkj-0.9.2.so — which the tool itself links — and a library
// that needs it: `run` loads both into a namespace of their own, so the dependent binds to the
// wrapper's libkj. (The tool before: the dependent bound to the tool's libkj, "undefined symbol".)
TEST_F(CliLoadingTest, RunBindsWrapperLibrariesToEachOtherNotToTheTools) {
  const fs::path wrapper = path("kj.mwr");
  const Outcome packed = tool({"pack", "-o", wrapper, "--lib", "libkj=" MAPWRIGHT_FIXTURE_FAKE_KJ,
                               "--lib", "user=" MAPWRIGHT_FIXTURE_KJ_USER ":libkj", "--no-progress"});
  ASSERT_TRUE(exits_with(packed, 0));
  const Outcome ran = tool({"run", wrapper, "user", "kj_user_main"});
  EXPECT_EXIT_CODE(ran, 7);
  EXPECT_EQ(ran.err, "");
  // Printed through the namespace's own C library, and not flushed by the function: the tool
  // flushes it after the call.
  EXPECT_EQ(ran.out, "kj_user_main: the fake libkj answers 7\n");

  // The standard wrapper still runs (its libraries need only each other and libc).
  const fs::path standard = pack_standard();
  const Outcome b = tool({"run", standard, "libb", "fixture_b_main", "x"});
  EXPECT_EXIT_CODE(b, 2);
  EXPECT_EQ(b.out, "fixture_b_main argc=2 argv: libb x\n");
}

// What dlopen() certainly refuses is refused at pack: exit 3, one line naming the entry, the
// file and the reason; nothing is written.
TEST_F(CliLoadingTest, PackRefusesLibrariesThatCannotLoad) {
  const std::string a = read_file(MAPWRIGHT_FIXTURE_A);
  struct Case {
    std::string what;
    fs::path file;
    std::vector<std::string> says;
  };
  const std::vector<Case> cases = {
      {"object file", MAPWRIGHT_FIXTURE_OBJECT, {"not a shared library (ELF type ET_REL)"}},
      {"truncated",
       edited_a("half.so", [](std::string& bytes) { bytes.resize(bytes.size() / 2); }),
       {"truncated ELF", "the file has " + std::to_string(a.size() / 2)}},
      {"header only",
       edited_a("header.so", [](std::string& bytes) { bytes.resize(40); }),
       {"truncated ELF", "the file has 40 bytes"}},
      {"machine",
       edited_a("arm.so",
                [this](std::string& bytes) {
                  header(bytes)->e_machine = header(bytes)->e_machine == EM_AARCH64 ? EM_X86_64
                                                                                    : EM_AARCH64;
                }),
       {"built for machine EM_", ", this system runs EM_"}},
      {"class",
       edited_a("class.so",
                [](std::string& bytes) {
                  bytes[EI_CLASS] = sizeof(void*) == 8 ? ELFCLASS32 : ELFCLASS64;
                }),
       {"built as ELFCLASS", "this system loads ELFCLASS"}},
      {"byte order",
       edited_a("order.so",
                [](std::string& bytes) {
                  bytes[EI_DATA] = bytes[EI_DATA] == ELFDATA2LSB ? ELFDATA2MSB : ELFDATA2LSB;
                }),
       {"endian", "this system loads ELFDATA"}},
      {"text", edited_a("text.so", [](std::string& bytes) { bytes = "#!/bin/sh\nexit 0\n"; }),
       {"not an ELF file"}},
  };
  const fs::path wrapper = path("w.mwr");
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const Outcome outcome =
        tool({"pack", "-o", wrapper, "--lib", "bad=" + c.file.string(), "--no-progress"});
    EXPECT_EXIT_CODE(outcome, 3);
    std::vector<std::string> says = {"entry 'bad' from '" + c.file.string() + "': "};
    says.insert(says.end(), c.says.begin(), c.says.end());
    expect_one_error_line(outcome, says);
    EXPECT_FALSE(fs::exists(wrapper));
  }
  // A wrapper already there is left as it was.
  const fs::path standard = pack_standard();
  const std::string before = read_file(standard);
  const Outcome over = tool({"pack", "-o", standard, "--lib", "o=" MAPWRIGHT_FIXTURE_OBJECT,
                             "--no-progress"});
  EXPECT_EXIT_CODE(over, 3);
  EXPECT_TRUE(read_file(standard) == before);
  // As data, the same bytes are fine.
  EXPECT_EXIT_CODE(tool({"pack", "-o", wrapper, "--data", "o=" MAPWRIGHT_FIXTURE_OBJECT,
                         "--no-progress"}),
                   0);
}

// A dependency without a SONAME cannot be what the dependent's DT_NEEDED names: refused, naming
// both entries and the DT_NEEDED names left unmatched. A dependency whose SONAME the dependent
// does not list is accepted.
TEST_F(CliLoadingTest, PackRefusesADependencyWithoutSoname) {
  const fs::path wrapper = path("w.mwr");
  const Outcome refused =
      tool({"pack", "-o", wrapper, "--lib", "a=" MAPWRIGHT_FIXTURE_NO_SONAME, "--lib",
            "b=" MAPWRIGHT_FIXTURE_B ":a", "--no-progress"});
  EXPECT_EXIT_CODE(refused, 3);
  expect_one_error_line(refused, {"entry 'b' depends on 'a', but entry 'a' from '" MAPWRIGHT_FIXTURE_NO_SONAME
                                  "' has no SONAME",
                                  "cannot match", "'libmwfixture_a.so'", "-Wl,-soname"});
  EXPECT_FALSE(fs::exists(wrapper));

  // The fake libkj does not list libmwfixture_a.so: an ordering-only dependency.
  const Outcome accepted =
      tool({"pack", "-o", wrapper, "--lib", "a=" MAPWRIGHT_FIXTURE_A, "--lib",
            "k=" MAPWRIGHT_FIXTURE_FAKE_KJ ":a", "--no-progress"});
  EXPECT_EXIT_CODE(accepted, 0);
  EXPECT_EQ(accepted.err, "");
}

// run's loader messages: dlerror()'s own text, without a misleading errno text after it.
TEST_F(CliLoadingTest, RunSaysWhatTheDynamicLinkerSays) {
  const fs::path standard = pack_standard();
  const Outcome no_symbol = tool({"run", standard, "liba", "no_such_function"});
  EXPECT_EXIT_CODE(no_symbol, 3);
  expect_one_error_line(no_symbol, {"'no_such_function'", "undefined symbol: no_such_function"});
  EXPECT_THAT(no_symbol.err, Not(HasSubstr("No such file or directory")));
  EXPECT_TRUE(no_symbol.err.ends_with("undefined symbol: no_such_function\n")) << no_symbol.err;

  // libb without liba in the wrapper: its DT_NEEDED is nowhere. The hint says how to add it.
  const fs::path lonely = path("lonely.mwr");
  ASSERT_TRUE(exits_with(
      tool({"pack", "-o", lonely, "--lib", "libb=" MAPWRIGHT_FIXTURE_B, "--no-progress"}), 0));
  const Outcome missing = tool({"run", lonely, "libb", "fixture_b_main"});
  EXPECT_EXIT_CODE(missing, 3);
  expect_one_error_line(missing, {"'" + lonely.string() + ":libb'",
                                  "libmwfixture_a.so: cannot open shared object file",
                                  "add it to the wrapper as a library entry and name it as a "
                                  "dependency of 'libb'",
                                  "--lib NAME=PATH:DEP"});
  EXPECT_THAT(missing.err, Not(HasSubstr("Exec format error")));
  EXPECT_EQ(missing.out, "");
}

}  // namespace
}  // namespace mapwright
