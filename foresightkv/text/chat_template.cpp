// C++ renderings of the supported chat templates (see chat_template.h). Each render_* function follows the
// official Jinja template statement by statement; comments quote the Jinja conditions they implement.
#include "foresightkv/text/chat_template.h"

#include "foresightkv/core/error.h"
#include "foresightkv/core/file.h"
#include "foresightkv/core/json.h"
#include "foresightkv/text/tokenizer.h"

namespace fkv::text {
namespace {

constexpr std::string_view kQwenDefaultSystem = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
constexpr std::string_view kSmolDefaultSystem = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
constexpr std::string_view kDeepSeekBos = "<｜begin▁of▁sentence｜>";

bool contains(std::string_view s, std::string_view what) { return s.find(what) != std::string_view::npos; }
bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

// Python str.lstrip('\n') / rstrip('\n') / strip('\n').
std::string_view lstrip_nl(std::string_view s) {
  while (!s.empty() && s.front() == '\n') s.remove_prefix(1);
  return s;
}
std::string_view rstrip_nl(std::string_view s) {
  while (!s.empty() && s.back() == '\n') s.remove_suffix(1);
  return s;
}
std::string_view strip_nl(std::string_view s) { return rstrip_nl(lstrip_nl(s)); }

// Python s.split(sep)[0] and s.split(sep)[-1].
std::string_view split_first(std::string_view s, std::string_view sep) {
  const size_t p = s.find(sep);
  return p == std::string_view::npos ? s : s.substr(0, p);
}
std::string_view split_last(std::string_view s, std::string_view sep) {
  const size_t p = s.rfind(sep);
  return p == std::string_view::npos ? s : s.substr(p + sep.size());
}

void check_roles(std::span<const ChatMessage> messages, const std::string& family) {
  FKV_CHECK_ARG(!messages.empty(), "chat template '{}': expected at least one message, got none", family);
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& r = messages[i].role;
    FKV_CHECK_ARG(r == "system" || r == "user" || r == "assistant" || r == "tool",
                  "chat template '{}': message {} has role '{}'; expected system, user, assistant or tool", family, i,
                  r);
  }
}

void render_tool(std::span<const ChatMessage> m, size_t i, std::string& out) {
  // {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %} '<|im_start|>user'
  if (i == 0 || m[i - 1].role != "tool") out += "<|im_start|>user";
  out += "\n<tool_response>\n";
  out += m[i].content;
  out += "\n</tool_response>";
  // {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %} '<|im_end|>\n'
  if (i + 1 == m.size() || m[i + 1].role != "tool") out += "<|im_end|>\n";
}

std::string render_qwen3(std::span<const ChatMessage> m, const ChatOptions& opt) {
  check_roles(m, "qwen3");
  std::string out;
  if (m[0].role == "system") out += "<|im_start|>system\n" + m[0].content + "<|im_end|>\n";
  // ns.last_query_index: the last user message that is not a wrapped tool response.
  size_t last_query = m.size() - 1;
  for (size_t k = m.size(); k-- > 0;) {
    const auto& c = m[k].content;
    if (m[k].role == "user" && !(starts_with(c, "<tool_response>") && ends_with(c, "</tool_response>"))) {
      last_query = k;
      break;
    }
  }
  for (size_t i = 0; i < m.size(); ++i) {
    const ChatMessage& msg = m[i];
    if (msg.role == "user" || (msg.role == "system" && i != 0)) {
      out += "<|im_start|>" + msg.role + "\n" + msg.content + "<|im_end|>\n";
    } else if (msg.role == "assistant") {
      std::string_view content = msg.content;
      std::string_view reasoning;
      if (msg.reasoning_content) {
        reasoning = *msg.reasoning_content;
      } else if (contains(msg.content, "</think>")) {
        content = lstrip_nl(split_last(msg.content, "</think>"));
        reasoning = lstrip_nl(split_last(rstrip_nl(split_first(msg.content, "</think>")), "<think>"));
      }
      const bool last = i + 1 == m.size();
      if (i > last_query && (last || !reasoning.empty())) {
        out += "<|im_start|>assistant\n<think>\n";
        out += strip_nl(reasoning);
        out += "\n</think>\n\n";
        out += lstrip_nl(content);
      } else {
        out += "<|im_start|>assistant\n";
        out += content;
      }
      out += "<|im_end|>\n";
    } else if (msg.role == "tool") {
      render_tool(m, i, out);
    }
  }
  if (opt.add_generation_prompt) {
    out += "<|im_start|>assistant\n";
    if (opt.enable_thinking.has_value() && !*opt.enable_thinking) out += "<think>\n\n</think>\n\n";
  }
  return out;
}

std::string render_qwen25(std::span<const ChatMessage> m, const ChatOptions& opt, const std::string& default_system) {
  check_roles(m, "qwen2.5");
  std::string out;
  if (m[0].role == "system")
    out += "<|im_start|>system\n" + m[0].content + "<|im_end|>\n";
  else
    out += "<|im_start|>system\n" + default_system + "<|im_end|>\n";
  for (size_t i = 0; i < m.size(); ++i) {
    const ChatMessage& msg = m[i];
    if (msg.role == "user" || (msg.role == "system" && i != 0) || msg.role == "assistant")
      out += "<|im_start|>" + msg.role + "\n" + msg.content + "<|im_end|>\n";
    else if (msg.role == "tool")
      render_tool(m, i, out);
  }
  if (opt.add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

std::string render_deepseek(std::span<const ChatMessage> m, const ChatOptions& opt, const std::string& bos) {
  check_roles(m, "deepseek-r1");
  std::string system_prompt;  // ns.system_prompt: the last system message wins
  for (const auto& msg : m)
    if (msg.role == "system") system_prompt = msg.content;
  std::string out = bos + system_prompt;
  bool is_tool = false, is_output_first = true;
  for (const auto& msg : m) {
    if (msg.role == "user") {
      is_tool = false;
      out += "<｜User｜>" + msg.content;
    } else if (msg.role == "assistant") {
      if (is_tool) {
        out += "<｜tool▁outputs▁end｜>" + msg.content + "<｜end▁of▁sentence｜>";
        is_tool = false;
      } else {
        // {% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}
        std::string_view content = msg.content;
        if (contains(content, "</think>")) content = split_last(content, "</think>");
        out += "<｜Assistant｜>";
        out += content;
        out += "<｜end▁of▁sentence｜>";
      }
    } else if (msg.role == "tool") {
      is_tool = true;
      if (is_output_first) {
        out += "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>" + msg.content + "<｜tool▁output▁end｜>";
        is_output_first = false;
      } else {
        out += "\n<｜tool▁output▁begin｜>" + msg.content + "<｜tool▁output▁end｜>";
      }
    }
  }
  if (is_tool) out += "<｜tool▁outputs▁end｜>";
  if (opt.add_generation_prompt && !is_tool) out += "<｜Assistant｜><think>\n";
  return out;
}

std::string render_chatml(std::span<const ChatMessage> m, const ChatOptions& opt, const std::string* default_system) {
  FKV_CHECK_ARG(!m.empty(), "chat template 'chatml': expected at least one message, got none");
  std::string out;
  // {% if loop.first and messages[0]['role'] != 'system' %} default system prompt
  if (default_system && m[0].role != "system") out += "<|im_start|>system\n" + *default_system + "<|im_end|>\n";
  for (const auto& msg : m) out += "<|im_start|>" + msg.role + "\n" + msg.content + "<|im_end|>\n";
  if (opt.add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

// Undo Jinja string-literal escapes (\n, \t, \', \", \\) in a literal cut out of a template.
std::string unescape_jinja(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      const char c = s[++i];
      out.push_back(c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c);
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// The literal default system prompt of a ChatML template: text after "<|im_start|>system" + newline (real
// or escaped) up to "<|im_end|>" that contains no quote, i.e. is not built from messages[0]['content'].
std::optional<std::string> find_default_system(std::string_view tpl) {
  static constexpr std::string_view kHead = "<|im_start|>system";
  for (size_t p = tpl.find(kHead); p != std::string_view::npos; p = tpl.find(kHead, p + 1)) {
    size_t q = p + kHead.size();
    if (tpl.substr(q, 1) == "\n")
      q += 1;
    else if (tpl.substr(q, 2) == "\\n")
      q += 2;
    else
      continue;
    const size_t e = tpl.find("<|im_end|>", q);
    if (e == std::string_view::npos) continue;
    const std::string_view body = tpl.substr(q, e - q);
    if (body.empty() || contains(body, "'") || contains(body, "\"") || contains(body, "{")) continue;
    return unescape_jinja(body);
  }
  return std::nullopt;
}

}  // namespace

std::vector<std::string> ChatTemplate::names() { return {"qwen3", "qwen2.5", "deepseek-r1", "smollm2", "chatml"}; }

ChatTemplate ChatTemplate::from_name(std::string_view name) {
  ChatTemplate t;
  if (name == "qwen3") {
    t.family_ = ChatFamily::Qwen3;
    t.name_ = "qwen3";
  } else if (name == "qwen2.5" || name == "qwen2") {
    t.family_ = ChatFamily::Qwen25;
    t.name_ = "qwen2.5";
    t.default_system_ = kQwenDefaultSystem;
  } else if (name == "deepseek-r1" || name == "deepseek-r1-distill-qwen" || name == "deepseek-r1-distill-llama") {
    t.family_ = ChatFamily::DeepSeekR1;
    t.name_ = "deepseek-r1";
    t.bos_token_ = kDeepSeekBos;
  } else if (name == "smollm2") {
    t.family_ = ChatFamily::SmolLM2;
    t.name_ = "smollm2";
    t.default_system_ = kSmolDefaultSystem;
  } else if (name == "chatml") {
    t.family_ = ChatFamily::ChatML;
    t.name_ = "chatml";
  } else {
    std::string list;
    for (const auto& n : names()) list += (list.empty() ? "" : ", ") + n;
    FKV_THROW_KIND(1, "unknown chat template family '{}'; expected one of: {}", name, list);
  }
  return t;
}

ChatTemplate ChatTemplate::detect(std::string_view tpl, std::string_view bos_token) {
  FKV_CHECK_FORMAT(!tpl.empty(),
                   "no chat template to detect (the tokenizer/GGUF has none); pass a family name explicitly ({})",
                   "qwen3, qwen2.5, deepseek-r1, smollm2, chatml");
  if (contains(tpl, "<｜User｜>") || contains(tpl, "<｜Assistant｜>")) {
    ChatTemplate t = from_name("deepseek-r1");
    if (!bos_token.empty()) t.bos_token_ = bos_token;
    return t;
  }
  if (contains(tpl, "<|im_start|>")) {
    if (contains(tpl, "enable_thinking") || contains(tpl, "reasoning_content") || contains(tpl, "</think>"))
      return from_name("qwen3");
    if (auto sys = find_default_system(tpl)) {
      ChatTemplate t = from_name(contains(*sys, "You are Qwen") ? "qwen2.5" : "smollm2");
      t.default_system_ = *sys;
      return t;
    }
    return from_name("chatml");
  }
  FKV_THROW_KIND(2,
                 "chat template not recognized (first 120 bytes: '{}'); supported families: qwen3, qwen2.5, "
                 "deepseek-r1, smollm2, chatml; pass one by name to override detection",
                 std::string(tpl.substr(0, 120)));
}

ChatTemplate ChatTemplate::for_tokenizer(const Tokenizer& tokenizer, std::string_view override_name) {
  if (!override_name.empty()) {
    ChatTemplate t = from_name(override_name);
    if (t.family_ == ChatFamily::DeepSeekR1 && !tokenizer.bos_token().empty()) t.bos_token_ = tokenizer.bos_token();
    return t;
  }
  FKV_CHECK_FORMAT(!tokenizer.chat_template().empty(),
                   "{} has no chat template; pass a family name (qwen3, qwen2.5, deepseek-r1, smollm2, chatml)",
                   tokenizer.source());
  return detect(tokenizer.chat_template(), tokenizer.bos_token());
}

std::string ChatTemplate::render(std::span<const ChatMessage> messages, const ChatOptions& options) const {
  switch (family_) {
    case ChatFamily::Qwen3: return render_qwen3(messages, options);
    case ChatFamily::Qwen25: return render_qwen25(messages, options, default_system_);
    case ChatFamily::DeepSeekR1: return render_deepseek(messages, options, bos_token_);
    case ChatFamily::SmolLM2: return render_chatml(messages, options, &default_system_);
    case ChatFamily::ChatML: return render_chatml(messages, options, nullptr);
  }
  FKV_THROW("chat template: unhandled family {}", static_cast<int>(family_));
}

// ---- prompt config -----------------------------------------------------------------------------------------

PromptConfig PromptConfig::load(const std::string& path) {
  FKV_CHECK_ARG(file_exists(path), "prompt config '{}' not found; it ships as configs/prompts.json in the repository",
                path);
  const json j = read_json_file(path);
  check_keys(j, {"schema_version", "reasoning_suffix", "suffix_separator", "comment"}, path);
  FKV_CHECK_FORMAT(j.contains("schema_version") && j["schema_version"].is_number_integer() &&
                       j["schema_version"].get<int>() == 1,
                   "{}: expected \"schema_version\": 1, found {}", path, j.value("schema_version", json()).dump());
  FKV_CHECK_FORMAT(j.contains("reasoning_suffix") && j["reasoning_suffix"].is_string(),
                   "{}: \"reasoning_suffix\" must be a string", path);
  PromptConfig c;
  c.reasoning_suffix = j["reasoning_suffix"].get<std::string>();
  c.suffix_separator = "\n";
  if (j.contains("suffix_separator")) {
    FKV_CHECK_FORMAT(j["suffix_separator"].is_string(), "{}: \"suffix_separator\" must be a string", path);
    c.suffix_separator = j["suffix_separator"].get<std::string>();
  }
  return c;
}

std::string PromptConfig::reasoning_prompt(std::string_view problem) const {
  std::string out(problem);
  if (!reasoning_suffix.empty()) out += suffix_separator + reasoning_suffix;
  return out;
}

}  // namespace fkv::text
