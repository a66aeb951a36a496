// Chat templates rendered in C++ (no Jinja engine): each supported family re-implements its official Jinja
// template line by line, and tests compare the output with HF tokenizer.apply_chat_template(...,
// tokenize=False) on fixed conversations (tests/data/text/chat_template_refs.jsonl). Families:
//   qwen3        Qwen3 hybrid (April 2025): drops <think> reasoning of assistant turns before the last user
//                query; enable_thinking=false appends "<think>\n\n</think>\n\n" to the generation prompt.
//   qwen2.5      Qwen2.5 ChatML with the default system prompt
//                "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
//   deepseek-r1  DeepSeek-R1-Distill-Qwen and -Llama (one shared template): {bos}{system}<｜User｜>...
//                <｜Assistant｜>...<｜end▁of▁sentence｜>, generation prefix "<｜Assistant｜><think>\n".
//   smollm2      ChatML that inserts a default system prompt when the first message is not a system one
//                (the default text is read from the template string when detected).
//   chatml       plain ChatML.
// Tool calls (assistant tool_calls, tools=) are not supported; tool-role messages are.
// The evaluation protocol's reasoning suffix lives in configs/prompts.json (PromptConfig), not in code.
#pragma once
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fkv::text {

class Tokenizer;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", "tool" (chatml/smollm2 accept any role)
  std::string content;
  /// Qwen3 only: the reasoning of an assistant turn given separately (otherwise parsed from <think>...</think>).
  std::optional<std::string> reasoning_content;
};

enum class ChatFamily { Qwen3, Qwen25, DeepSeekR1, SmolLM2, ChatML };

struct ChatOptions {
  bool add_generation_prompt = true;
  /// Qwen3: unset or true appends nothing after "<|im_start|>assistant\n" (the model opens <think> itself);
  /// false appends an empty think block. Other families ignore it.
  std::optional<bool> enable_thinking;
};

class ChatTemplate {
 public:
  /// By family name: "qwen3", "qwen2.5" (alias "qwen2"), "deepseek-r1" (aliases "deepseek-r1-distill-qwen",
  /// "deepseek-r1-distill-llama"), "smollm2", "chatml". Throws InvalidArgument listing the names otherwise.
  static ChatTemplate from_name(std::string_view name);
  /// Recognizes the family from a Jinja template string (tokenizer_config.json / GGUF tokenizer.chat_template).
  /// `bos_token` is what {{bos_token}} renders as (deepseek-r1). Throws FormatError when not recognized.
  static ChatTemplate detect(std::string_view jinja_template, std::string_view bos_token = "");
  /// The tokenizer's template, or the family `override_name` when non-empty (e.g. a GGUF without a template).
  static ChatTemplate for_tokenizer(const Tokenizer& tokenizer, std::string_view override_name = "");
  static std::vector<std::string> names();

  /// The prompt text; tokenize it with add_special_tokens=false (templates render BOS themselves).
  std::string render(std::span<const ChatMessage> messages, const ChatOptions& options = {}) const;

  ChatFamily family() const { return family_; }
  const std::string& name() const { return name_; }
  /// Default system prompt (qwen2.5, smollm2), "" otherwise.
  const std::string& default_system() const { return default_system_; }
  /// What deepseek-r1 renders for {{bos_token}} (default "<｜begin▁of▁sentence｜>").
  const std::string& bos_token() const { return bos_token_; }

 private:
  ChatFamily family_ = ChatFamily::ChatML;
  std::string name_;
  std::string default_system_;
  std::string bos_token_;
};

/// Prompt settings of the evaluation protocol, read at run time from configs/prompts.json:
///   {"schema_version": 1, "reasoning_suffix": "...", "suffix_separator": "\n"}
struct PromptConfig {
  std::string reasoning_suffix;
  std::string suffix_separator;

  /// Throws InvalidArgument/FormatError naming the file on a missing file, unknown keys or wrong types.
  static PromptConfig load(const std::string& path);
  /// The user turn for a problem: problem + separator + suffix (just the problem when the suffix is empty).
  std::string reasoning_prompt(std::string_view problem) const;
};

}  // namespace fkv::text
