// `mapwright pack --format flatbuffers`: the FlatBuffers form end to end through the tool —
// inspect (text, JSON, --metadata-out decoded by the stock flatc), verify, extract, run, and
// the usage errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cli.h"
#include "mapwright/wrapper.h"

namespace mapwright {
namespace {

using namespace cli_test;  // NOLINT(google-build-using-namespace): the tests' own toolkit

const std::string kSchema = std::string(MAPWRIGHT_TEST_SCHEMA_DIR) + "/../../include/mapwright/wrapper.fbs";

class CliFlatBuffersTest : public CliTest {
 protected:
  fs::path pack_flat(const std::vector<std::string>& extra = {}) {
    write_file(path("blob.bin"), random_bytes(300 * 1024 + 17, 1));
    write_file(path("empty.bin"), "");
    const fs::path wrapper = path("f.mwr");
    std::vector<std::string> args = {"pack", "--format", "flatbuffers", "-o", wrapper,
                                     "--lib", "liba=" MAPWRIGHT_FIXTURE_A,
                                     "--lib", "libb=" MAPWRIGHT_FIXTURE_B ":liba",
                                     "--data", "blob=" + path("blob.bin").string(),
                                     "--data", "empty=" + path("empty.bin").string(),
                                     "--no-progress"};
    args.insert(args.end(), extra.begin(), extra.end());
    const Outcome packed = tool(args);
    EXPECT_EXIT_CODE(packed, 0);
    EXPECT_EQ(packed.err, "");
    return wrapper;
  }
};

TEST_F(CliFlatBuffersTest, PackInspectVerifyExtractRun) {
  for (const bool compressed : {false, true}) {
    SCOPED_TRACE(compressed ? "compressed" : "plain");
    const fs::path wrapper =
        compressed ? pack_flat({"--compress", "zstd", "--frame-size", "64k"}) : pack_flat();

    const Outcome text = tool({"inspect", wrapper});
    EXPECT_EXIT_CODE(text, 0);
    EXPECT_THAT(lines_of(text.out)[0], HasSubstr("FlatBuffers form version 1 (metadata checked)"));
    const Json json = inspect_json(wrapper);
    EXPECT_EQ(json["format"].string, "flatbuffers");
    EXPECT_EQ(json["format_version"].number, kFlatWrapperFormatVersion);
    ASSERT_EQ(json["entries"].array.size(), 4u);
    EXPECT_EQ(json["entries"].array[2]["chunks"].number, 1u) << "one run per entry";

    const Outcome verified = tool({"verify", wrapper});
    EXPECT_EXIT_CODE(verified, 0);
    EXPECT_THAT(verified.out, HasSubstr("metadata and every other byte ok (FlatBuffers form version 1)"));

    const Outcome extracted = tool({"extract", wrapper, "blob", "-o", path("out.bin")});
    EXPECT_EXIT_CODE(extracted, 0);
    EXPECT_TRUE(read_file(path("out.bin")) == read_file(path("blob.bin")));

    const Outcome ran = tool({"run", wrapper, "libb", "fixture_b_main", "x"});
    EXPECT_EXIT_CODE(ran, 2);
    EXPECT_EQ(ran.out, "fixture_b_main argc=2 argv: libb x\n");
  }
}

TEST_F(CliFlatBuffersTest, MetadataOutIsWhatFlatcDecodes) {
  const fs::path wrapper = pack_flat();
  const Outcome inspected = tool({"inspect", wrapper, "--metadata-out", path("meta.bin")});
  EXPECT_EXIT_CODE(inspected, 0);
  const Outcome decoded = run_program(MAPWRIGHT_FLATC, {"--json", "--raw-binary", "--strict-json",
                                                        "-o", path("").string(), kSchema, "--",
                                                        path("meta.bin").string()});
  ASSERT_TRUE(decoded.exited && decoded.exit_code == 0) << decoded.describe();
  const std::string json = read_file(path("meta.json"));
  EXPECT_THAT(json, HasSubstr("\"name\": \"libb\""));
  EXPECT_THAT(json, HasSubstr("\"size\": 307217"));
  EXPECT_THAT(json, HasSubstr("\"producer\": \"mapwright " MAPWRIGHT_VERSION "\""));

  // The Cap'n Proto form has no separate metadata: a usage error that says how to decode it.
  const fs::path capnp = path("c.mwr");
  EXPECT_EXIT_CODE(tool({"pack", "-o", capnp, "--data", "blob=" + path("blob.bin").string(),
                         "--no-progress"}), 0);
  const Outcome refused = tool({"inspect", capnp, "--metadata-out", path("c.bin")});
  EXPECT_EXIT_CODE(refused, 2);
  expect_one_error_line(refused, {"--metadata-out", "Cap'n Proto form", "capnp decode"});
  EXPECT_FALSE(fs::exists(path("c.bin")));
}

TEST_F(CliFlatBuffersTest, AnUnknownFormatIsAUsageError) {
  const Outcome refused = tool({"pack", "--format", "protobuf", "-o", path("x.mwr"), "--data",
                                "a=" MAPWRIGHT_FIXTURE_A});
  EXPECT_EXIT_CODE(refused, 2);
  EXPECT_THAT(refused.err, HasSubstr("--format"));
  EXPECT_FALSE(fs::exists(path("x.mwr")));
}

}  // namespace
}  // namespace mapwright
