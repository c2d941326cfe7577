// Renders Ollama Modelfile templates with Go's own text/template, the way Ollama's server does for /api/chat
// (server: the Modelfile SYSTEM is added when a conversation has no system message; template/template.go:
// collate, the template data types, the "json" function and missingkey=zero).
//
// stdin:  {"cases": [{"template": "...", "system": "...", "messages": [...], "tools": [...]}, ...]}
//
//	messages as Ollama's API takes them: role, content, tool_calls [{"function": {"name", "arguments"}}];
//	a case with "data" instead renders the template with that data as it is
//
// stdout: [{"text": "..."} or {"error": "..."}, ...], one per case
package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

type apiToolCall struct {
	ID       string `json:"id"`
	Function struct {
		Index     int            `json:"index"`
		Name      string         `json:"name"`
		Arguments map[string]any `json:"arguments"`
	} `json:"function"`
}

type apiMessage struct {
	Role       string        `json:"role"`
	Content    string        `json:"content"`
	Thinking   string        `json:"thinking"`
	ToolCalls  []apiToolCall `json:"tool_calls"`
	ToolName   string        `json:"tool_name"`
	ToolCallID string        `json:"tool_call_id"`
}

type renderCase struct {
	Data     map[string]any `json:"data"` // when set: the template data as it is, no chat request
	Template string         `json:"template"`
	System   string         `json:"system"`
	Messages []apiMessage   `json:"messages"`
	Tools    []any          `json:"tools"`
}

// The types Ollama hands a template (template/template.go, v0.14 and later).
type templateArgs map[string]any

func (t templateArgs) String() string {
	if t == nil {
		return "{}"
	}
	bts, _ := json.Marshal(t)
	return string(bts)
}

type templateTools []any

func (t templateTools) String() string {
	bts, _ := json.Marshal(t)
	return string(bts)
}

type templateToolCallFunction struct {
	Index     int
	Name      string
	Arguments templateArgs
}

type templateToolCall struct {
	ID       string
	Function templateToolCallFunction
}

type templateMessage struct {
	Role       string
	Content    string
	Thinking   string
	ToolCalls  []templateToolCall
	ToolName   string
	ToolCallID string
}

var funcs = template.FuncMap{
	"json": func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	},
}

// collate as Ollama: system messages joined for .System (and kept in .Messages); consecutive messages of one role
// other than tool merged.
func collate(msgs []apiMessage) (string, []*apiMessage) {
	var system []string
	var collated []*apiMessage
	for i := range msgs {
		if msgs[i].Role == "system" {
			system = append(system, msgs[i].Content)
		}
		if len(collated) > 0 && collated[len(collated)-1].Role == msgs[i].Role && msgs[i].Role != "tool" {
			collated[len(collated)-1].Content += "\n\n" + msgs[i].Content
		} else {
			collated = append(collated, &msgs[i])
		}
	}
	return strings.Join(system, "\n\n"), collated
}

func convert(messages []*apiMessage) []*templateMessage {
	result := make([]*templateMessage, len(messages))
	for i, msg := range messages {
		var calls []templateToolCall
		for _, tc := range msg.ToolCalls {
			calls = append(calls, templateToolCall{
				ID: tc.ID,
				Function: templateToolCallFunction{
					Index: tc.Function.Index, Name: tc.Function.Name, Arguments: templateArgs(tc.Function.Arguments),
				},
			})
		}
		result[i] = &templateMessage{
			Role: msg.Role, Content: msg.Content, Thinking: msg.Thinking, ToolCalls: calls,
			ToolName: msg.ToolName, ToolCallID: msg.ToolCallID,
		}
	}
	return result
}

func render(c renderCase) (string, error) {
	if c.Data != nil {
		tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(c.Template)
		if err != nil {
			return "", err
		}
		var b bytes.Buffer
		err = tmpl.Execute(&b, c.Data)
		return b.String(), err
	}
	msgs := c.Messages
	if c.System != "" && (len(msgs) == 0 || msgs[0].Role != "system") {
		msgs = append([]apiMessage{{Role: "system", Content: c.System}}, msgs...)
	}
	system, collated := collate(msgs)
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(c.Template)
	if err != nil {
		return "", err
	}
	var tools templateTools
	if c.Tools != nil {
		tools = templateTools(c.Tools)
	}
	var b bytes.Buffer
	err = tmpl.Execute(&b, map[string]any{
		"System":     system,
		"Messages":   convert(collated),
		"Tools":      tools,
		"Response":   "",
		"Think":      false,
		"ThinkLevel": "",
		"IsThinkSet": false,
	})
	return b.String(), err
}

func main() {
	var input struct {
		Cases []renderCase `json:"cases"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&input); err != nil {
		os.Stderr.WriteString("bad input: " + err.Error() + "\n")
		os.Exit(2)
	}
	results := make([]map[string]string, len(input.Cases))
	for i, c := range input.Cases {
		text, err := render(c)
		if err != nil {
			results[i] = map[string]string{"error": err.Error()}
		} else {
			results[i] = map[string]string{"text": text}
		}
	}
	out, _ := json.Marshal(results)
	os.Stdout.Write(out)
}
