// fkv-eval: evaluation tools. Subcommands: grade (score JSONL responses with the protocol's grader,
// foresightkv-spec.md §G.4). Thin: parsing and printing only; the work lives in foresightkv/eval/.
// New subcommands (fidelity, generate, ...) are one entry in commands() plus a cmd_* function.
#include <iostream>
#include <string>
#include <vector>

#include "foresightkv/cli/args.h"
#include "foresightkv/core/error.h"
#include "foresightkv/eval/grade_jsonl.h"
#include "foresightkv/eval/grader.h"

using fkv::cli::Args;
using fkv::cli::OptionSpec;

namespace {

int cmd_grade(const Args& a) {
  fkv::eval::GradeJsonlOptions o;
  o.input = a.require("input");
  o.output = a.require("output");
  o.dataset = fkv::eval::parse_dataset(a.get("dataset", "math"));
  o.field = a.get("field", "response");
  const fkv::eval::GradeSummary s = fkv::eval::grade_jsonl(o);
  std::cout << s.to_json_line() << "\n";
  return 0;
}

struct Command {
  const char* name;
  const char* usage;
  const char* summary;
  std::vector<OptionSpec> spec;
  int (*run)(const Args&);
};

std::vector<Command> commands() {
  return {
      {"grade",
       "fkv-eval grade --input F.jsonl --output G.jsonl [--dataset gsm8k|aime24|aime25|amc23|gpqa|math] "
       "[--field response]\n"
       "  Each input line is a JSON object with the response (--field) and \"answer\"; each output line is that\n"
       "  object plus \"extracted\", \"correct\", \"strict_extracted\", \"strict_correct\" (strict: only the last\n"
       "  \\boxed{...} counts). Blank lines are skipped. Prints {\"n\", \"accuracy\", \"strict_accuracy\"} with\n"
       "  accuracies as fractions in [0, 1]. Rules: docs/grading.md.\n"
       "options:",
       "grade model responses in a JSONL file (extraction + math_equal of the official grader)",
       {{"input", true, "JSONL with one {\"response\": ..., \"answer\": ...} object per line", ""},
        {"output", true, "JSONL written atomically, only when every line graded", ""},
        {"dataset", true, "ground-truth format: gsm8k (\"... #### N\"), aime24, aime25, amc23, gpqa (letters), math",
         "math"},
        {"field", true, "key of the model response in each object", "response"},
        {"help", false, "show this help", ""}},
       cmd_grade},
  };
}

void usage_all(std::ostream& os) {
  os << "usage: fkv-eval SUBCOMMAND [options]   (SUBCOMMAND --help for details)\nsubcommands:\n";
  for (const auto& c : commands()) os << "  " << c.name << "  " << c.summary << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    usage_all(argc < 2 ? std::cerr : std::cout);
    return argc < 2 ? 2 : 0;
  }
  const std::string sub = argv[1];
  for (const auto& c : commands()) {
    if (sub != c.name) continue;
    try {
      Args a(argc, argv, 2, c.spec);
      if (a.flag("help")) {
        std::cout << fkv::cli::format_help(c.usage, c.spec);
        return 0;
      }
      FKV_CHECK_ARG(a.positional().empty(), "unexpected argument '{}'; options are --name value",
                    a.positional().front());
      return c.run(a);
    } catch (const std::exception& e) {
      std::cerr << "fkv-eval " << sub << ": " << e.what() << "\n";
      return 1;
    }
  }
  std::cerr << "fkv-eval: unknown subcommand '" << sub << "'\n";
  usage_all(std::cerr);
  return 2;
}
