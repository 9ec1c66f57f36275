// src/wrapper_graph.h — the dependency rules of wrapper entries, shared by the writer (checked
// at publish) and the reader (checked at open, and the load order).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "mapwright/wrapper.h"

namespace mapwright::detail {

// `name` for a message a person reads: control bytes (NUL, newline, escape...) and
// backslashes are written as \xNN, so a hostile name cannot cut or forge the message; at most
// 200 bytes of it are shown.
std::string printable(std::string_view name);

struct GraphEntry {
  std::string_view name;
  EntryKind kind;
  const std::vector<std::string>* dependencies;
};

// Checks that names are unique, that only libraries have dependencies, and that each one names
// a library entry other than itself, with no cycle. Throws Error(EINVAL, operation, subject,
// "entry 'x': ...") for the first entry that breaks a rule. Returns, for each entry, the
// indices of its direct dependencies. Iterative: a chain of a million entries is no deeper
// on the stack than a chain of two.
std::vector<std::vector<std::size_t>> check_dependencies(const std::vector<GraphEntry>& entries,
                                                         const std::string& operation,
                                                         const std::string& subject);

// The indices to load for `roots` (in that order), each after its dependencies, each once.
// `edges` is check_dependencies()' result (so there is no cycle).
std::vector<std::size_t> load_order(const std::vector<std::vector<std::size_t>>& edges,
                                    const std::vector<std::size_t>& roots);

}  // namespace mapwright::detail
