// Chat templates: C++ renderings equal HF apply_chat_template(tokenize=False) on the committed conversations
// (tests/data/text/chat_template_refs.jsonl), family detection from the real template strings
// (chat_templates.json, the tokenizer/GGUF), and the run-time prompt config (configs/prompts.json).
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "foresightkv/core/error.h"
#include "foresightkv/text/chat_template.h"
#include "text_test_util.h"

using fkv::json;
using fkv::text::ChatFamily;
using fkv::text::ChatMessage;
using fkv::text::ChatOptions;
using fkv::text::ChatTemplate;
using Catch::Matchers::Contains;

namespace {

std::vector<ChatMessage> to_messages(const json& j) {
  std::vector<ChatMessage> out;
  for (const auto& m : j) {
    ChatMessage msg{m["role"].get<std::string>(), m["content"].get<std::string>(), std::nullopt};
    if (m.contains("reasoning_content")) msg.reasoning_content = m["reasoning_content"].get<std::string>();
    out.push_back(std::move(msg));
  }
  return out;
}

ChatOptions to_options(const json& row) {
  ChatOptions o;
  o.add_generation_prompt = row["add_generation_prompt"].get<bool>();
  if (row.contains("enable_thinking")) o.enable_thinking = row["enable_thinking"].get<bool>();
  return o;
}

}  // namespace

TEST_CASE("chat templates render exactly like HF apply_chat_template", "[unit][text]") {
  const auto rows = fkv::test::read_jsonl(fkv::test::text_ref("chat_template_refs.jsonl"));
  const json templates = fkv::read_json_file(fkv::test::text_ref("chat_templates.json"));
  std::map<std::string, size_t> checked;
  for (const auto& row : rows) {
    const std::string family = row["family"].get<std::string>();
    const auto messages = to_messages(row["messages"]);
    const ChatOptions opts = to_options(row);
    const std::string want = row["text"].get<std::string>();
    INFO("family " << family << ", conversation " << row["messages"].dump());
    // By name, and as detected from the real template string.
    CHECK(ChatTemplate::from_name(family).render(messages, opts) == want);
    const ChatTemplate detected =
        ChatTemplate::detect(templates[family].get<std::string>(), family == "deepseek-r1" ? "<｜begin▁of▁sentence｜>" : "");
    CHECK(detected.name() == family);
    CHECK(detected.render(messages, opts) == want);
    ++checked[family];
  }
  for (const auto& f : ChatTemplate::names()) CHECK(checked[f] >= 20);
}

TEST_CASE("chat template of the tokenizer / GGUF, default system prompts and overrides", "[unit][text]") {
  const ChatTemplate qwen = ChatTemplate::for_tokenizer(fkv::test::qwen3_tokenizer());
  CHECK(qwen.family() == ChatFamily::Qwen3);
  const ChatTemplate smol = ChatTemplate::for_tokenizer(fkv::test::smollm2_tokenizer());
  CHECK(smol.family() == ChatFamily::SmolLM2);
  CHECK(smol.default_system() == "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  CHECK(ChatTemplate::for_tokenizer(fkv::test::smollm2_tokenizer(), "chatml").family() == ChatFamily::ChatML);
  CHECK(ChatTemplate::from_name("qwen2.5").default_system() ==
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
  CHECK(ChatTemplate::from_name("deepseek-r1-distill-llama").family() == ChatFamily::DeepSeekR1);

  const std::vector<ChatMessage> msgs = {{"user", "What is 1+1?", std::nullopt}};
  CHECK(qwen.render(msgs) == "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n");
  CHECK(qwen.render(msgs, {true, false}) ==
        "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  CHECK(ChatTemplate::from_name("deepseek-r1").render(msgs) ==
        "<｜begin▁of▁sentence｜><｜User｜>What is 1+1?<｜Assistant｜><think>\n");

  CHECK_THROWS_AS(ChatTemplate::from_name("llama2"), fkv::InvalidArgument);
  CHECK_THROWS_AS(ChatTemplate::detect("{{ messages[0].content }}"), fkv::FormatError);
  CHECK_THROWS_AS(ChatTemplate::detect(""), fkv::FormatError);
  CHECK_THROWS_AS(qwen.render(std::vector<ChatMessage>{}), fkv::InvalidArgument);
  CHECK_THROWS_WITH(qwen.render(std::vector<ChatMessage>{{"developer", "x", std::nullopt}}), Contains("developer"));
}

TEST_CASE("prompt config: the reasoning suffix comes from configs/prompts.json", "[unit][text]") {
  const auto cfg = fkv::text::PromptConfig::load(fkv::test::source_dir() + "/configs/prompts.json");
  CHECK(cfg.reasoning_suffix == "Please reason step by step, and put your final answer within \\boxed{}.");
  CHECK(cfg.reasoning_prompt("Find x.") ==
        "Find x.\nPlease reason step by step, and put your final answer within \\boxed{}.");

  const auto dir = std::filesystem::temp_directory_path() / "fkv_prompt_cfg_test";
  std::filesystem::create_directories(dir);
  const auto bad = (dir / "prompts.json").string();
  std::ofstream(bad) << R"({"schema_version": 1, "reasoning_sufix": "typo"})";
  CHECK_THROWS_WITH(fkv::text::PromptConfig::load(bad), Contains("reasoning_sufix"));
  std::ofstream(bad) << R"({"schema_version": 2, "reasoning_suffix": "x"})";
  CHECK_THROWS_WITH(fkv::text::PromptConfig::load(bad), Contains("schema_version"));
  CHECK_THROWS_AS(fkv::text::PromptConfig::load((dir / "missing.json").string()), fkv::InvalidArgument);
  std::filesystem::remove_all(dir);
}
