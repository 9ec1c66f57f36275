#include "wrapper_graph.h"

#include <cerrno>
#include <string>
#include <unordered_map>
#include <utility>

#include "mapwright/error.h"

namespace mapwright::detail {
namespace {

std::string in_quotes(std::string_view name) { return "'" + printable(name) + "'"; }

}  // namespace

std::string printable(std::string_view name) {
  static constexpr char kDigits[] = "0123456789abcdef";
  constexpr std::size_t kShown = 200;
  std::string text;
  for (const char c : name.substr(0, kShown)) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f || c == '\\') {
      text += "\\x";
      text += kDigits[byte >> 4];
      text += kDigits[byte & 15];
    } else {
      text += c;
    }
  }
  if (name.size() > kShown) text += "...";
  return text;
}

std::vector<std::vector<std::size_t>> check_dependencies(const std::vector<GraphEntry>& entries,
                                                         const std::string& operation,
                                                         const std::string& subject) {
  const auto refuse = [&](std::size_t i, const std::string& what) {
    throw Error(EINVAL, operation, subject, "entry " + in_quotes(entries[i].name) + ": " + what);
  };
  std::unordered_map<std::string_view, std::size_t> index;
  index.reserve(entries.size());
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (!index.emplace(entries[i].name, i).second) {
      refuse(i, "the name is used by an earlier entry too");
    }
  }
  std::vector<std::vector<std::size_t>> edges(entries.size());
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const std::vector<std::string>& deps = *entries[i].dependencies;
    if (deps.empty()) continue;
    if (entries[i].kind != EntryKind::kSharedLibrary) {
      refuse(i, "a data entry cannot have dependencies");
    }
    for (const std::string& dep : deps) {
      const auto found = index.find(dep);
      if (found == index.end()) refuse(i, "depends on " + in_quotes(dep) + ", which is not in the wrapper");
      if (found->second == i) refuse(i, "depends on itself");
      if (entries[found->second].kind != EntryKind::kSharedLibrary) {
        refuse(i, "depends on " + in_quotes(dep) + ", which is a data entry, not a library");
      }
      edges[i].push_back(found->second);
    }
  }
  // Cycle search: depth first with an explicit stack. kOnPath marks the current path.
  enum : unsigned char { kUnseen, kOnPath, kDone };
  std::vector<unsigned char> state(entries.size(), kUnseen);
  std::vector<std::pair<std::size_t, std::size_t>> stack;  // (entry, next edge to follow)
  for (std::size_t root = 0; root < entries.size(); ++root) {
    if (state[root] != kUnseen) continue;
    stack.emplace_back(root, 0);
    state[root] = kOnPath;
    while (!stack.empty()) {
      auto& [node, next] = stack.back();
      if (next == edges[node].size()) {
        state[node] = kDone;
        stack.pop_back();
        continue;
      }
      const std::size_t to = edges[node][next++];
      if (state[to] == kOnPath) {
        refuse(to, "is part of a dependency cycle (through " + in_quotes(entries[node].name) + ")");
      }
      if (state[to] == kUnseen) {
        state[to] = kOnPath;
        stack.emplace_back(to, 0);
      }
    }
  }
  return edges;
}

std::vector<std::size_t> load_order(const std::vector<std::vector<std::size_t>>& edges,
                                    const std::vector<std::size_t>& roots) {
  std::vector<std::size_t> order;
  std::vector<bool> placed(edges.size(), false);
  std::vector<bool> entered(edges.size(), false);
  std::vector<std::pair<std::size_t, std::size_t>> stack;
  for (const std::size_t root : roots) {
    if (entered[root]) continue;
    entered[root] = true;
    stack.emplace_back(root, 0);
    while (!stack.empty()) {
      auto& [node, next] = stack.back();
      if (next == edges[node].size()) {
        if (!placed[node]) {
          placed[node] = true;
          order.push_back(node);
        }
        stack.pop_back();
        continue;
      }
      const std::size_t to = edges[node][next++];
      if (!entered[to]) {
        entered[to] = true;
        stack.emplace_back(to, 0);
      }
    }
  }
  return order;
}

}  // namespace mapwright::detail
