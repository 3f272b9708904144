"""``torchformers chat`` run in-process on the tiny chat model, with scripted stdin."""

from __future__ import annotations

import torch
from conftest import greedy_reply

import torchformers

GREEDY = ["--temperature", "0", "--max-new-tokens", "8"]


def _prompt_text(directory, call) -> str:
    tokenizer = torchformers.AutoTokenizer.from_pretrained(directory)
    return tokenizer.decode(call["input_ids"][0])


def _template_ids(directory, messages) -> list[int]:
    tokenizer = torchformers.AutoTokenizer.from_pretrained(directory)
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]


def test_two_turns_keep_the_history_and_eof_exits_cleanly(chat_model_dir, run_cli, generate_calls):
    result = run_cli(["chat", chat_model_dir, *GREEDY], stdin="hello there\nWhat is the capital?\n")
    assert result.status == 0
    first = [{"role": "user", "content": "hello there"}]
    first_answer = greedy_reply(chat_model_dir, first, 8)
    second = [*first, {"role": "assistant", "content": first_answer.strip()},
              {"role": "user", "content": "What is the capital?"}]
    second_answer = greedy_reply(chat_model_dir, second, 8)
    assert first_answer.strip(), "the tiny model should say something for this test to check the history"
    assert result.out == f"{first_answer}\n{second_answer}\n"
    assert len(generate_calls) == 2
    assert generate_calls[1]["input_ids"][0].tolist() == _template_ids(chat_model_dir, second)
    rendered = _prompt_text(chat_model_dir, generate_calls[1])
    assert "<|im_start|>user\nhello there<|im_end|>" in rendered
    assert f"<|im_start|>assistant\n{first_answer.strip()}<|im_end|>" in rendered


def test_reset_forgets_the_conversation_but_keeps_the_system_prompt(chat_model_dir, run_cli, generate_calls):
    result = run_cli(["chat", chat_model_dir, *GREEDY, "--system", "Be brief."],
                     stdin="hello there\n/reset\nWhat is the capital?\n")
    assert result.status == 0
    assert "cleared" in result.err
    expected = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital?"}]
    assert generate_calls[1]["input_ids"][0].tolist() == _template_ids(chat_model_dir, expected)


def test_exit_stops_reading(chat_model_dir, run_cli, generate_calls):
    result = run_cli(["chat", chat_model_dir, *GREEDY], stdin="hello there\n/exit\nnever answered\n")
    assert result.status == 0
    assert len(generate_calls) == 1


def test_end_of_input_at_once_exits_zero_without_generating(chat_model_dir, run_cli, generate_calls):
    result = run_cli(["chat", chat_model_dir], stdin="")
    assert (result.status, result.out, generate_calls) == (0, "", [])


def test_ctrl_c_during_an_answer_returns_to_the_prompt_and_drops_the_turn(chat_model_dir, run_cli, generate_calls):
    def interrupt_after_three_tokens(generate_kwargs):
        streamer = generate_kwargs["streamer"]
        put, seen = streamer.put, []

        def put_then_interrupt(value):
            seen.append(value)
            if len(seen) > 3:  # the prompt, then three new tokens
                raise KeyboardInterrupt
            put(value)

        streamer.put = put_then_interrupt

    generate_calls.before.append(interrupt_after_three_tokens)
    result = run_cli(["chat", chat_model_dir, *GREEDY], stdin="hello there\nWhat is the capital?\n")
    assert result.status == 0
    assert "stopped" in result.err
    assert len(generate_calls) == 2
    # The interrupted question is not in the history: the second prompt is the second question alone.
    only_second = [{"role": "user", "content": "What is the capital?"}]
    assert generate_calls[1]["input_ids"][0].tolist() == _template_ids(chat_model_dir, only_second)
    assert result.out.endswith(greedy_reply(chat_model_dir, only_second, 8) + "\n")


def test_ctrl_c_at_the_prompt_keeps_the_chat_going(chat_model_dir, run_cli, generate_calls):
    result = run_cli(["chat", chat_model_dir, *GREEDY], stdin="hello there\n", interrupt_at=0)
    assert result.status == 0
    assert "/exit" in result.err
    assert len(generate_calls) == 1


def test_chat_samples_by_default_and_a_seed_repeats_it(chat_model_dir, run_cli, generate_calls):
    argv = ["chat", chat_model_dir, "--max-new-tokens", "12", "--seed", "3"]
    first = run_cli(argv, stdin="hello there\n")
    again = run_cli(argv, stdin="hello there\n")
    assert first.out == again.out
    assert generate_calls[0]["do_sample"] is True
    assert (generate_calls[0]["temperature"], generate_calls[0]["top_p"]) == (0.7, 0.9)


def test_a_model_without_a_chat_template_cannot_chat(chat_model_dir, tmp_path, run_cli):
    plain = tmp_path / "plain"
    plain.mkdir()
    for file in chat_model_dir.iterdir():
        (plain / file.name).write_bytes(file.read_bytes())
    config = (plain / "tokenizer_config.json").read_text().replace('"chat_template"', '"unused_template"')
    (plain / "tokenizer_config.json").write_text(config)
    result = run_cli(["chat", plain], stdin="hello\n")
    assert result.status == 1
    assert "no chat template" in result.err and "--no-chat" in result.err
    assert "Traceback" not in result.err


def test_the_answer_streams_before_generation_ends(chat_model_dir, run_cli, generate_calls, capsys):
    written_during_generation = []

    def watch_stdout(generate_kwargs):
        streamer = generate_kwargs["streamer"]
        put = streamer.put

        def put_and_look(value: torch.Tensor):
            put(value)
            written_during_generation.append(capsys.readouterr().out)

        streamer.put = put_and_look

    generate_calls.before.append(watch_stdout)
    run_cli(["chat", chat_model_dir, "--temperature", "0", "--max-new-tokens", "30"], stdin="hello there\n")
    # Text reached stdout while tokens were still coming, not only at the end.
    assert any(written_during_generation[:-1])
