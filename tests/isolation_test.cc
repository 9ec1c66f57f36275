// tests/isolation_test.cc — link-map namespaces (LoadOptions::Namespace): a library whose SONAME
// is one this program already has loaded (libkj-0.9.2.so: the tests link Cap'n Proto) is refused
// in the default namespace, naming the object in the way; in a namespace of its own it loads,
// and a library that needs it binds to it. Also the loader's messages: dlerror()'s own text for
// a missing symbol or dependency, with a hint for the dependency.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <link.h>

#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "child.h"
#include "content.h"
#include "fixture_paths.h"
#include "mapwright/error.h"
#include "mapwright/loader.h"
#include "mapwright/wrapper.h"
#include "wrapper_helpers.h"

namespace mapwright {
namespace {

using test::expect_error;

using test::TempDir;

const std::vector<std::byte>& fake_kj() {
  static const std::vector<std::byte> bytes = test::read_file_bytes(MAPWRIGHT_FIXTURE_FAKE_KJ);
  return bytes;
}
const std::vector<std::byte>& kj_user() {
  static const std::vector<std::byte> bytes = test::read_file_bytes(MAPWRIGHT_FIXTURE_KJ_USER);
  return bytes;
}

// Where this process loaded libkj-0.9.2.so from (the real one), or "" if it did not.
std::string real_kj_path() {
  void* handle = dlopen("libkj-0.9.2.so", RTLD_LAZY | RTLD_NOLOAD);
  if (handle == nullptr) return {};
  std::string path;
  link_map* map = nullptr;
  if (dlinfo(handle, RTLD_DI_LINKMAP, &map) == 0 && map != nullptr) path = map->l_name;
  dlclose(handle);
  return path;
}

LoadOptions in_new_namespace() {
  LoadOptions options;
  options.link_namespace = LoadOptions::Namespace::kNew;
  return options;
}

TEST(Isolation, SonameOfALoadedLibraryIsRefusedInTheDefaultNamespace) {
  const std::string real = real_kj_path();
  ASSERT_FALSE(real.empty()) << "this test program links libkj-0.9.2.so (Cap'n Proto)";
  LoadOptions options;
  options.name = "fake libkj";
  expect_error([&] { (void)load_library(std::span<const std::byte>(fake_kj()), options); }, EEXIST,
               {"'fake libkj'", "SONAME libkj-0.9.2.so is already loaded from " + real,
                "LoadOptions::Namespace::kNew"});
}

TEST(Isolation, ANewNamespaceHoldsTheLibraryAndWhatNeedsIt) {
  const Library kj = load_library(std::span<const std::byte>(fake_kj()), in_new_namespace());
  EXPECT_NE(kj.namespace_id(), 0);
  EXPECT_EQ(kj.function<int()>("mwfixture_fake_kj_answer")(), 7);
  LoadOptions beside;
  beside.link_namespace = LoadOptions::Namespace::kBeside;
  beside.beside = &kj;
  const Library user = load_library(std::span<const std::byte>(kj_user()), beside);
  EXPECT_EQ(user.namespace_id(), kj.namespace_id());
  EXPECT_EQ(user.function<int()>("kj_user_answer")(), 7);
  // The real libkj is untouched in the default namespace: a symbol of it still resolves there.
  EXPECT_EQ(dlsym(RTLD_DEFAULT, "mwfixture_fake_kj_answer"), nullptr);

  // A second fake libkj beside the first: refused like in the default namespace.
  beside.name = "second fake";
  expect_error([&] { (void)load_library(std::span<const std::byte>(fake_kj()), beside); }, EEXIST,
               {"'second fake'", "libkj-0.9.2.so is already loaded", "in the namespace"});
  // The same sealed image twice is not a second copy: dlopen() gives the loaded object again.
  const SealedImage image = [] {
    Region region = Region::memfd("fake kj");
    region.ensure(fake_kj().size());
    std::memcpy(region.data(), fake_kj().data(), fake_kj().size());
    region.finish(fake_kj().size());
    return std::move(region).seal();
  }();
  const Library first = load_library(image, in_new_namespace());
  beside.beside = &first;
  beside.name = "";
  const Library again = load_library(image, beside);
  EXPECT_EQ(again.handle(), first.handle());
}

// What the default namespace did before (and still does when asked for a duplicate): the
// dependent binds libkj-0.9.2.so to the program's real libkj and cannot find the fake's symbol.
// dlerror()'s text is the message, not followed by "Exec format error".
TEST(Isolation, InTheDefaultNamespaceTheDependentBindsToTheProgramsLibkj) {
  const auto result = test::run_in_child([] {
    LoadOptions duplicate;
    duplicate.allow_duplicate_soname = true;
    const Library kj = load_library(std::span<const std::byte>(fake_kj()), duplicate);
    LoadOptions options;
    options.name = "kj user";
    try {
      const Library user = load_library(std::span<const std::byte>(kj_user()), options);
      CHILD_CHECK_MSG(false, "the dependent loaded in the default namespace");
    } catch (const Error& e) {
      const std::string what = e.what();
      CHILD_CHECK_MSG(e.error() == ENOEXEC, what);
      CHILD_CHECK_MSG(what.find("undefined symbol: mwfixture_fake_kj_answer") != std::string::npos, what);
      CHILD_CHECK_MSG(what.ends_with("mwfixture_fake_kj_answer"), what);
    }
  });
  test::expect_clean_exit(result);
}

TEST(Isolation, WrapperSetsShareOneNewNamespace) {
  TempDir dir;
  const auto path = dir / "kj.mwr";
  {
    WrapperWriter writer(path);
    writer.add_library("libkj", std::span<const std::byte>(fake_kj()));
    writer.add_library("user", std::span<const std::byte>(kj_user()), {"libkj"});
    writer.publish();
  }
  const Wrapper wrapper = Wrapper::open(path);
  expect_error([&] { (void)wrapper.load_with_dependencies("user"); }, EEXIST,
               {"'" + path.string() + ":libkj'", "libkj-0.9.2.so is already loaded from"});
  const LoadedLibraries isolated = wrapper.load_with_dependencies("user", in_new_namespace());
  ASSERT_EQ(isolated.size(), 2u);
  EXPECT_NE(isolated[0].namespace_id(), 0);
  EXPECT_EQ(isolated[1].namespace_id(), isolated[0].namespace_id());
  EXPECT_EQ(isolated.at("user").function<int()>("kj_user_answer")(), 7);
  // Another set: another namespace.
  const LoadedLibraries other = wrapper.load_all(in_new_namespace());
  EXPECT_NE(other[0].namespace_id(), isolated[0].namespace_id());
  EXPECT_EQ(other.at("user").function<int()>("kj_user_answer")(), 7);
}

TEST(Isolation, OptionsThatCannotWorkAreRefused) {
  LoadOptions global = in_new_namespace();
  global.visibility = LoadOptions::Visibility::kGlobal;
  expect_error([&] { (void)load_library(std::span<const std::byte>(fake_kj()), global); }, EINVAL,
               {"RTLD_GLOBAL"});
  LoadOptions nowhere;
  nowhere.link_namespace = LoadOptions::Namespace::kBeside;
  expect_error([&] { (void)load_library(std::span<const std::byte>(fake_kj()), nowhere); }, EINVAL,
               {"LoadOptions::beside"});
}

// glibc has 16 namespaces (DL_NNS), the default one included, and static TLS for the copies of
// libc in a few of them: when either runs out, dlmopen()'s own text says so (under the
// sanitizers fixture a needs libc, and static TLS runs out first), and a namespace whose
// libraries were all unloaded can be made again.
TEST(Isolation, RunningOutOfNamespacesIsAClearError) {
  const auto result = test::run_in_child([] {
    const std::vector<std::byte> a = test::read_file_bytes(MAPWRIGHT_FIXTURE_A);
    std::vector<Library> held;
    std::optional<std::string> failure;
    for (int i = 0; i < 20 && !failure; ++i) {
      try {
        held.push_back(load_library(std::span<const std::byte>(a), in_new_namespace()));
      } catch (const Error& e) {
        failure = e.what();
        CHILD_CHECK_MSG(e.error() == ENOEXEC, *failure);
      }
    }
    CHILD_CHECK_MSG(failure.has_value(), "20 namespaces were made");
    CHILD_CHECK_MSG(failure->find("dlmopen (a new namespace)") != std::string::npos, *failure);
    CHILD_CHECK_MSG(failure->find("no more namespaces available for dlmopen()") != std::string::npos ||
                        failure->find("cannot allocate memory in static TLS block") != std::string::npos,
                    *failure);
    CHILD_CHECK_MSG(held.size() <= 15, std::to_string(held.size()));
    held.clear();
    const Library again = load_library(std::span<const std::byte>(a), in_new_namespace());
    CHILD_CHECK(again.function<int()>("fixture_answer")() == 42);
  });
  test::expect_clean_exit(result);
}

// A missing symbol ends with dlerror()'s text, not "No such file or directory"; the code is
// still ENOENT.
TEST(LoaderMessages, MissingSymbolIsDlerrorsText) {
  const Library library = load_library(std::span<const std::byte>(fake_kj()), in_new_namespace());
  try {
    (void)library.symbol("no_such_symbol");
    FAIL() << "found a symbol that is not there";
  } catch (const Error& e) {
    EXPECT_EQ(e.error(), ENOENT);
    const std::string what = e.what();
    EXPECT_TRUE(what.ends_with("undefined symbol: no_such_symbol")) << what;
    EXPECT_EQ(what.find("No such file or directory"), std::string::npos) << what;
  }
}

// A dependency that is neither loaded nor on disk: dlerror()'s text and, from a wrapper, how to
// carry it.
TEST(LoaderMessages, MissingDependencySaysHowToAddIt) {
  TempDir dir;
  const auto path = dir / "b.mwr";
  {
    WrapperWriter writer(path);
    writer.add_library("libb", std::filesystem::path(MAPWRIGHT_FIXTURE_B));
    writer.publish();
  }
  const Wrapper wrapper = Wrapper::open(path);
  for (const LoadOptions& options : {LoadOptions{}, in_new_namespace()}) {
    try {
      (void)wrapper.load_with_dependencies("libb", options);
      ADD_FAILURE() << "libb loaded without liba";
    } catch (const Error& e) {
      EXPECT_EQ(e.error(), ENOEXEC);
      const std::string what = e.what();
      EXPECT_NE(what.find("libmwfixture_a.so: cannot open shared object file"), std::string::npos)
          << what;
      EXPECT_NE(what.find("add it to the wrapper as a library entry and name it as a dependency "
                          "of 'libb'"),
                std::string::npos)
          << what;
      EXPECT_EQ(what.find("Exec format error"), std::string::npos) << what;
    }
  }
}

}  // namespace
}  // namespace mapwright
