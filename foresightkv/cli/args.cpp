#include "foresightkv/cli/args.h"

#include <iostream>

#include "foresightkv/core/error.h"
#include "foresightkv/core/logging.h"

namespace fkv::cli {

Args::Args(int argc, char** argv, int first, const std::vector<OptionSpec>& spec) {
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0 || a.size() == 2) {
      positional_.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    const auto eq = name.find('=');
    bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const OptionSpec* s = nullptr;
    for (const auto& o : spec)
      if (o.name == name) s = &o;
    if (!s) {
      std::string known;
      for (const auto& o : spec) known += " --" + o.name;
      FKV_THROW_KIND(1, "unknown option --{}; known:{}", name, known);
    }
    if (s->takes_value && !inline_value) {
      FKV_CHECK_ARG(i + 1 < argc, "option --{} needs a value", name);
      value = argv[++i];
    }
    FKV_CHECK_ARG(s->takes_value || !inline_value, "option --{} takes no value", name);
    values_[name] = value;
  }
}

std::string Args::get(const std::string& name, const std::string& def) const {
  auto it = values_.find(name);
  return it == values_.end() ? def : it->second;
}

std::string Args::require(const std::string& name) const {
  auto it = values_.find(name);
  FKV_CHECK_ARG(it != values_.end(), "missing required option --{}", name);
  return it->second;
}

int64_t Args::get_int(const std::string& name, int64_t def) const {
  if (!has(name)) return def;
  const std::string v = get(name);
  try {
    size_t used = 0;
    int64_t r = std::stoll(v, &used);
    FKV_CHECK_ARG(used == v.size(), "--{} expects an integer, got '{}'", name, v);
    return r;
  } catch (const std::logic_error&) {
    FKV_THROW_KIND(1, "--{} expects an integer, got '{}'", name, v);
  }
}

double Args::get_double(const std::string& name, double def) const {
  if (!has(name)) return def;
  const std::string v = get(name);
  try {
    size_t used = 0;
    double r = std::stod(v, &used);
    FKV_CHECK_ARG(used == v.size(), "--{} expects a number, got '{}'", name, v);
    return r;
  } catch (const std::logic_error&) {
    FKV_THROW_KIND(1, "--{} expects a number, got '{}'", name, v);
  }
}

std::string format_help(const std::string& usage, const std::vector<OptionSpec>& spec) {
  std::string s = "usage: " + usage + "\n";
  for (const auto& o : spec) {
    std::string left = "  --" + o.name + (o.takes_value ? " V" : "");
    left.resize(std::max<size_t>(left.size() + 1, 26), ' ');
    s += left + o.help + (o.default_value.empty() ? "" : " (default " + o.default_value + ")") + "\n";
  }
  return s;
}

std::vector<int64_t> parse_int_list(const std::string& s, const std::string& what) {
  std::vector<int64_t> out;
  size_t p = 0;
  while (p <= s.size()) {
    size_t q = s.find(',', p);
    if (q == std::string::npos) q = s.size();
    std::string tok = s.substr(p, q - p);
    FKV_CHECK_ARG(!tok.empty(), "{}: empty element in list '{}'", what, s);
    try {
      size_t used = 0;
      out.push_back(std::stoll(tok, &used));
      FKV_CHECK_ARG(used == tok.size(), "{}: '{}' is not an integer", what, tok);
    } catch (const std::logic_error&) {
      FKV_THROW_KIND(1, "{}: '{}' is not an integer", what, tok);
    }
    p = q + 1;
  }
  return out;
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i <= s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    std::string item = s.substr(i, j - i);
    const size_t a = item.find_first_not_of(" \t"), b = item.find_last_not_of(" \t");
    if (a != std::string::npos) out.push_back(item.substr(a, b - a + 1));
    i = j + 1;
  }
  return out;
}

namespace {
void usage_all(const char* tool, const std::vector<Command>& commands, std::ostream& os) {
  os << "usage: " << tool << " SUBCOMMAND [options]   (SUBCOMMAND --help for details)\nsubcommands:\n";
  for (const auto& c : commands) os << "  " << c.name << "  " << c.summary << "\n";
}
}  // namespace

int run_subcommands(const char* tool, int argc, char** argv, const std::vector<Command>& commands) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    usage_all(tool, commands, argc < 2 ? std::cerr : std::cout);
    return argc < 2 ? 2 : 0;
  }
  const std::string sub = argv[1];
  for (const auto& c : commands) {
    if (sub != c.name) continue;
    try {
      Args a(argc, argv, 2, c.spec);
      if (a.flag("help")) {
        std::cout << format_help(c.usage, c.spec);
        return 0;
      }
      log::init(a.get("log-level", ""));
      FKV_CHECK_ARG(a.positional().empty(), "unexpected argument '{}'; options are --name value", a.positional().front());
      return c.run(a);
    } catch (const std::exception& e) {
      std::cerr << tool << " " << sub << ": " << e.what() << "\n";
      return 1;
    }
  }
  std::cerr << tool << ": unknown subcommand '" << sub << "'\n";
  usage_all(tool, commands, std::cerr);
  return 2;
}

}  // namespace fkv::cli
