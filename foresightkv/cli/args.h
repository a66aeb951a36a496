// Tiny command-line parser for the fkv tools: `tool SUBCOMMAND --key value --flag ...`.
// Options are declared per subcommand; unknown options and missing values are errors.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace fkv::cli {

struct OptionSpec {
  std::string name;     // without leading dashes
  bool takes_value;
  std::string help;
  std::string default_value;  // shown in --help; empty = none
};

class Args {
 public:
  /// Parse argv[first..]; throws InvalidArgument on unknown options or missing values.
  Args(int argc, char** argv, int first, const std::vector<OptionSpec>& spec);
  bool has(const std::string& name) const { return values_.count(name) != 0; }
  std::string get(const std::string& name, const std::string& def = "") const;
  std::string require(const std::string& name) const;
  int64_t get_int(const std::string& name, int64_t def) const;
  double get_double(const std::string& name, double def) const;
  bool flag(const std::string& name) const { return has(name); }
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

std::string format_help(const std::string& usage, const std::vector<OptionSpec>& spec);

/// One subcommand of a tool: `tool NAME [options]`.
struct Command {
  const char* name;
  const char* usage;    // first lines of NAME --help
  const char* summary;  // one line in the tool's subcommand list
  std::vector<OptionSpec> spec;
  int (*run)(const class Args&);
};

/// The `main()` of every fkv tool: `tool SUBCOMMAND [options]`. `tool`, `tool --help`: the subcommand list
/// (exit 2 / 0); `tool NAME --help`: NAME's help (0); unknown subcommand: 2; options are parsed strictly and
/// `--log-level` (when given) is applied before the command runs; an exception from parsing or from the
/// command is printed as "tool NAME: message" and exits 1. Otherwise the command's own exit code.
int run_subcommands(const char* tool, int argc, char** argv, const std::vector<Command>& commands);
std::vector<int64_t> parse_int_list(const std::string& s, const std::string& what);
/// Split a comma list, trimming blanks and dropping empty items.
std::vector<std::string> split_list(const std::string& s);

}  // namespace fkv::cli
