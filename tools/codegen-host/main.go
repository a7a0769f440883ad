// stackmigrate's SDK code generator: one binary, installed as pulumi-language-nodejs,
// pulumi-language-python, pulumi-language-go and pulumi-language-dotnet in a folder of its
// own that scripts/sdks.sh puts first on PATH while `pulumi package gen-sdk` runs; the
// name it is started under picks the language.
//
// Programs run under Pulumi's own hosts (scripts/toolchain.sh builds them from sdk/v3
// v3.68.0, v3.79.0 and v3.66.0), but those versions do not implement GeneratePackage.
// This one does, from the pinned Pulumi v3.206.0 modules: it binds the schema and runs
// Pulumi's real code generator for the language (github.com/pulumi/pulumi/pkg/v3/codegen).
// It runs no program.

package main

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	pbempty "github.com/golang/protobuf/ptypes/empty"
	dotnetgen "github.com/pulumi/pulumi/pkg/v3/codegen/dotnet"
	gogen "github.com/pulumi/pulumi/pkg/v3/codegen/go"
	nodejsgen "github.com/pulumi/pulumi/pkg/v3/codegen/nodejs"
	pythongen "github.com/pulumi/pulumi/pkg/v3/codegen/python"
	"github.com/pulumi/pulumi/pkg/v3/codegen/schema"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
)

// version is set at build time (-X main.version=...): the Pulumi version the host is built from.
var version = "dev"

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	language string
	engine   string
}

func main() {
	language := strings.TrimPrefix(filepath.Base(os.Args[0]), "pulumi-language-")
	switch language {
	case "nodejs", "python", "go", "dotnet":
	default:
		cmdutil.Exit(fmt.Errorf("started as %q: install this binary as pulumi-language-{nodejs,python,go,dotnet}", os.Args[0]))
	}
	// The engine passes runtime options as -key=value flags, then -root=..., then its
	// address last. Options are read from each request's ProgramInfo instead.
	engine := ""
	if n := len(os.Args); n > 1 && !strings.HasPrefix(os.Args[n-1], "-") {
		engine = os.Args[n-1]
	}
	h := &host{language: language, engine: engine}
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
	})
	if err != nil {
		cmdutil.Exit(fmt.Errorf("could not start the language host: %w", err))
	}
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		cmdutil.Exit(fmt.Errorf("language host stopped serving: %w", err))
	}
}

func (h *host) Handshake(ctx context.Context, req *pulumirpc.LanguageHandshakeRequest) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.engine = req.GetEngineAddress()
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *pbempty.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: strings.TrimPrefix(version, "v")}, nil
}

// GetRequiredPackages reports none: this host generates SDKs and runs no program.
func (h *host) GetRequiredPackages(context.Context, *pulumirpc.GetRequiredPackagesRequest) (*pulumirpc.GetRequiredPackagesResponse, error) {
	return &pulumirpc.GetRequiredPackagesResponse{}, nil
}

func (h *host) GeneratePackage(ctx context.Context, req *pulumirpc.GeneratePackageRequest) (*pulumirpc.GeneratePackageResponse, error) {
	loader, err := schema.NewLoaderClient(req.GetLoaderTarget())
	if err != nil {
		return nil, err
	}
	var spec schema.PackageSpec
	if err := json.Unmarshal([]byte(req.GetSchema()), &spec); err != nil {
		return nil, fmt.Errorf("decoding the schema: %w", err)
	}
	pkg, diags, err := schema.BindSpec(spec, loader, schema.ValidationOptions{AllowDanglingReferences: true})
	if err != nil {
		return nil, err
	}
	if diags.HasErrors() {
		return &pulumirpc.GeneratePackageResponse{Diagnostics: plugin.HclDiagnosticsToRPCDiagnostics(diags)}, nil
	}

	tool := "pulumi-language-" + h.language
	var files map[string][]byte
	switch h.language {
	case "nodejs":
		files, err = nodejsgen.GeneratePackage(tool, pkg, req.GetExtraFiles(), req.GetLocalDependencies(), req.GetLocal(), loader)
	case "python":
		files, err = pythongen.GeneratePackage(tool, pkg, req.GetExtraFiles(), loader)
	case "go":
		files, err = gogen.GeneratePackage(tool, pkg, req.GetLocalDependencies())
	case "dotnet":
		// The .NET generator downloads the package icon (the schema's logoUrl, else
		// Pulumi's logo on GitHub); with no network here it gets stackmigrate's own.
		http.DefaultTransport = offlineLogo{}
		files, err = dotnetgen.GeneratePackage(tool, pkg, req.GetExtraFiles(), req.GetLocalDependencies())
	}
	if err != nil {
		return nil, err
	}
	repairRelativeImports(files)
	for name, data := range files {
		path := filepath.Join(req.GetDirectory(), name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return nil, err
		}
	}
	return &pulumirpc.GeneratePackageResponse{Diagnostics: plugin.HclDiagnosticsToRPCDiagnostics(diags)}, nil
}

// repairRelativeImports fixes imports in sub-module files (config/, types/) that point
// one directory short of the package root. Pulumi 3.206's Node.js and Python generators
// compute the root as path.Dir(filepath.Rel(module, "")), which relied on Rel returning
// "../." before Go 1.26 cleaned it to ".."; built with this Go they write "./types/input"
// for "../types/input" and "from . import _utilities" for "from .. import _utilities".
// Only an import whose target is not among the generated files and is found one level
// up is changed; everything else is left exactly as generated.
func repairRelativeImports(files map[string][]byte) {
	exists := func(p string) bool { _, ok := files[path.Clean(p)]; return ok }
	tsSpec := regexp.MustCompile(`(from|import) "(\.\.?/[^"]*)"`)
	pyUtil := regexp.MustCompile(`(?m)^from (\.+) import _utilities$`)
	for name, data := range files {
		name = filepath.ToSlash(name)
		dir := path.Dir(name)
		if dir == "." {
			continue
		}
		switch {
		case strings.HasSuffix(name, ".ts"):
			resolves := func(spec string) bool {
				t := path.Join(dir, spec)
				return exists(t+".ts") || exists(t+"/index.ts")
			}
			files[name] = tsSpec.ReplaceAllFunc(data, func(m []byte) []byte {
				sub := tsSpec.FindSubmatch(m)
				spec := string(sub[2])
				up := "../" + strings.TrimPrefix(spec, "./")
				if resolves(spec) || !resolves(up) {
					return m
				}
				return []byte(fmt.Sprintf(`%s "%s"`, sub[1], up))
			})
		case strings.HasSuffix(name, ".py"), strings.HasSuffix(name, ".pyi"):
			files[name] = pyUtil.ReplaceAllFunc(data, func(m []byte) []byte {
				dots := string(pyUtil.FindSubmatch(m)[1])
				pkg := dir
				for i := 1; i < len(dots); i++ {
					pkg = path.Dir(pkg)
				}
				if exists(pkg+"/_utilities.py") || !exists(path.Dir(pkg)+"/_utilities.py") {
					return m
				}
				return []byte("from " + dots + ". import _utilities")
			})
		}
	}
}

// offlineLogo answers the .NET generator's icon download with a 64x64 PNG drawn here.
type offlineLogo struct{}

func (offlineLogo) RoundTrip(req *http.Request) (*http.Response, error) {
	if !strings.HasSuffix(req.URL.Path, ".png") {
		return nil, fmt.Errorf("no network: %s", req.URL)
	}
	img := image.NewRGBA(image.Rect(0, 0, 64, 64))
	for y := 0; y < 64; y++ {
		for x := 0; x < 64; x++ {
			// two stacked slabs, dev (top) to prod (bottom), on a transparent ground
			switch {
			case y >= 10 && y < 28 && x >= 8 && x < 56:
				img.Set(x, y, color.RGBA{0x4d, 0x5b, 0xd9, 0xff})
			case y >= 36 && y < 54 && x >= 8 && x < 56:
				img.Set(x, y, color.RGBA{0xf7, 0xbf, 0x2a, 0xff})
			}
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, err
	}
	return &http.Response{
		StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"image/png"}}, Body: io.NopCloser(&buf),
		ContentLength: int64(buf.Len()), Request: req,
	}, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
