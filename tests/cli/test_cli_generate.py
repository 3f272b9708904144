"""``torchformers generate`` in-process and as a subprocess, on the tiny chat model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import greedy_reply

QUESTION = "What is the capital of France?"
SOURCE_ROOT = str(Path(__file__).parents[2] / "src")


def test_prompt_from_stdin_through_the_chat_template_equals_greedy_generate(chat_model_dir, run_cli):
    result = run_cli(["generate", chat_model_dir, "-", "--max-new-tokens", "10"], stdin=QUESTION + "\n")
    assert result.status == 0
    expected = greedy_reply(chat_model_dir, [{"role": "user", "content": QUESTION}], 10)
    assert expected.strip()
    assert result.out == expected + "\n"
    assert result.err == ""


def test_no_chat_continues_the_raw_text(chat_model_dir, run_cli, generate_calls):
    result = run_cli(["generate", chat_model_dir, QUESTION, "--no-chat", "--max-new-tokens", "10"])
    assert result.status == 0
    assert result.out == greedy_reply(chat_model_dir, QUESTION, 10) + "\n"
    assert generate_calls[0]["do_sample"] is False


def test_system_prompt_goes_into_the_template(chat_model_dir, run_cli, generate_calls):
    import torchformers

    run_cli(["generate", chat_model_dir, QUESTION, "--system", "Answer in French.", "--max-new-tokens", "2"])
    tokenizer = torchformers.AutoTokenizer.from_pretrained(chat_model_dir)
    assert tokenizer.decode(generate_calls[0]["input_ids"][0]).startswith(
        "<|im_start|>system\nAnswer in French.<|im_end|>\n<|im_start|>user\n" + QUESTION)


def test_sampling_flags_reach_generate(chat_model_dir, run_cli, generate_calls):
    run_cli(["generate", chat_model_dir, QUESTION, "--temperature", "1.3", "--top-p", "0.5", "--seed", "1",
             "--max-new-tokens", "3"])
    call = generate_calls[0]
    assert (call["do_sample"], call["temperature"], call["top_p"], call["max_new_tokens"]) == (True, 1.3, 0.5, 3)


def _run_module(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [SOURCE_ROOT, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "torchformers", *args], input=stdin, capture_output=True, text=True,
                          env=environment, timeout=300)


def test_python_dash_m_in_a_pipe_prints_the_same_answer(chat_model_dir):
    completed = _run_module("generate", str(chat_model_dir), "-", "--max-new-tokens", "10", stdin=QUESTION)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == greedy_reply(chat_model_dir, [{"role": "user", "content": QUESTION}], 10) + "\n"


def test_a_missing_model_path_is_one_clear_line_in_a_subprocess(tmp_path):
    missing = tmp_path / "no-such-model"
    completed = _run_module("generate", str(missing), "hello")
    assert completed.returncode == 1
    assert completed.stdout == ""
    assert completed.stderr.strip() == f"torchformers: error: {missing} does not exist; check the path of the model."
