package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
)

// instruction is one Dockerfile line (continuations joined).
type instruction struct {
	Line int
	Cmd  string // upper-cased keyword
	Args string
}

// stage is a FROM and the instructions up to the next FROM.
type stage struct {
	Name  string
	From  string // base, ARGs not yet expanded
	Instr []instruction
}

type dockerfile struct {
	GlobalArgs map[string]string // ARGs before the first FROM, with defaults
	Stages     []stage
}

func parseDockerfile(file string) (*dockerfile, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read Dockerfile: %w", err)
	}
	df := &dockerfile{GlobalArgs: map[string]string{}}
	var cur *stage
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		start := i + 1
		l := strings.TrimSpace(lines[i])
		for strings.HasSuffix(l, `\`) && i+1 < len(lines) {
			i++
			l = strings.TrimSuffix(l, `\`) + " " + strings.TrimSpace(lines[i])
		}
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		kw, rest, _ := strings.Cut(l, " ")
		in := instruction{Line: start, Cmd: strings.ToUpper(kw), Args: strings.TrimSpace(rest)}
		switch {
		case in.Cmd == "FROM":
			f := strings.Fields(in.Args)
			st := stage{From: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.Name = f[2]
			}
			df.Stages = append(df.Stages, st)
			cur = &df.Stages[len(df.Stages)-1]
		case cur == nil && in.Cmd == "ARG":
			k, v, _ := strings.Cut(in.Args, "=")
			df.GlobalArgs[k] = v
		case cur == nil:
			return nil, fmt.Errorf("%s:%d: %s before the first FROM", file, start, in.Cmd)
		default:
			cur.Instr = append(cur.Instr, in)
		}
	}
	if len(df.Stages) == 0 {
		return nil, fmt.Errorf("%s: no FROM", file)
	}
	return df, nil
}

var argRef = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)

func expand(s string, args map[string]string) string {
	return argRef.ReplaceAllStringFunc(s, func(m string) string {
		return args[argRef.FindStringSubmatch(m)[1]]
	})
}

// image is what the final stage produces: files (path in the image -> file
// in the build context), user and entrypoint.
type image struct {
	Files      map[string]string
	User       string
	Entrypoint []string
}

// evaluate resolves the final stage, evaluating only the stages it needs.
func (df *dockerfile) evaluate(file, contextDir string, overrides map[string]string) (*image, error) {
	global := map[string]string{}
	for k, v := range df.GlobalArgs {
		global[k] = v
	}
	for k, v := range overrides {
		global[k] = v
	}
	done := map[int]*image{}
	var eval func(i int, seen map[int]bool) (*image, error)
	byName := func(name string) int {
		for j, s := range df.Stages {
			if s.Name != "" && s.Name == name {
				return j
			}
		}
		return -1
	}
	eval = func(i int, seen map[int]bool) (*image, error) {
		if img, ok := done[i]; ok {
			return img, nil
		}
		if seen[i] {
			return nil, fmt.Errorf("%s: stage %d refers to itself", file, i)
		}
		seen[i] = true
		st := df.Stages[i]
		img := &image{Files: map[string]string{}}
		base := expand(st.From, global)
		switch j := byName(base); {
		case base == "scratch":
		case j >= 0 && j < i:
			parent, err := eval(j, seen)
			if err != nil {
				return nil, err
			}
			for k, v := range parent.Files {
				img.Files[k] = v
			}
			img.User, img.Entrypoint = parent.User, parent.Entrypoint
		default:
			return nil, fmt.Errorf("%s: stage %q is FROM %s, which cannot be built offline (pass -build-arg for a prebuilt stage)", file, st.Name, base)
		}
		args := map[string]string{}
		for k, v := range global {
			args[k] = v
		}
		for _, in := range st.Instr {
			a := expand(in.Args, args)
			switch in.Cmd {
			case "ARG":
				k, v, _ := strings.Cut(in.Args, "=")
				if o, ok := overrides[k]; ok {
					v = o
				}
				args[k] = v
			case "COPY":
				f := strings.Fields(a)
				from := ""
				if len(f) > 0 && strings.HasPrefix(f[0], "--from=") {
					from, f = strings.TrimPrefix(f[0], "--from="), f[1:]
				}
				if len(f) != 2 {
					return nil, fmt.Errorf("%s:%d: COPY with %d paths: only COPY SRC DST is supported", file, in.Line, len(f))
				}
				src, dst := f[0], path.Clean(f[1])
				if from == "" {
					p := filepath.Join(contextDir, filepath.FromSlash(src))
					if _, err := os.Stat(p); err != nil {
						return nil, fmt.Errorf("%s:%d: COPY %s: %w (run make build first?)", file, in.Line, src, err)
					}
					img.Files[dst] = p
					continue
				}
				j := byName(from)
				if j < 0 || j >= i {
					return nil, fmt.Errorf("%s:%d: COPY --from=%s: no such earlier stage", file, in.Line, from)
				}
				other, err := eval(j, seen)
				if err != nil {
					return nil, err
				}
				p, ok := other.Files[path.Clean(src)]
				if !ok {
					return nil, fmt.Errorf("%s:%d: COPY --from=%s %s: stage has no such file", file, in.Line, from, src)
				}
				img.Files[dst] = p
			case "USER":
				img.User = a
			case "ENTRYPOINT":
				var ep []string
				if err := json.Unmarshal([]byte(a), &ep); err != nil {
					return nil, fmt.Errorf("%s:%d: ENTRYPOINT must be the JSON form: %w", file, in.Line, err)
				}
				img.Entrypoint = ep
			default:
				return nil, fmt.Errorf("%s:%d: %s is not supported without a container engine", file, in.Line, in.Cmd)
			}
		}
		done[i] = img
		return img, nil
	}
	return eval(len(df.Stages)-1, map[int]bool{})
}
