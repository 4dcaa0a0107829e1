package node

import (
	_ "embed"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	v1reflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1"
	v1alphareflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// descriptors is the API's FileDescriptorSet with source info (comments),
// written by `make generate` (buf build). protoc-gen-go drops comments from
// the descriptors it embeds, so reflection serves these instead and grpcurl
// describe shows the API's documentation.
//
//go:embed descriptors.binpb
var descriptors []byte

var apiFiles = sync.OnceValues(func() (*protoregistry.Files, error) {
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(descriptors, &set); err != nil {
		return nil, fmt.Errorf("embedded descriptors: %w", err)
	}
	return protodesc.NewFiles(&set)
})

// registerReflection serves server reflection (v1 and v1alpha) from the
// documented descriptors, falling back to the compiled-in ones.
func registerReflection(s *grpc.Server) {
	files, err := apiFiles()
	if err != nil {
		reflection.Register(s)
		return
	}
	opts := reflection.ServerOptions{Services: s, DescriptorResolver: documented{files}, ExtensionResolver: protoregistry.GlobalTypes}
	v1reflectiongrpc.RegisterServerReflectionServer(s, reflection.NewServerV1(opts))
	v1alphareflectiongrpc.RegisterServerReflectionServer(s, reflection.NewServer(opts))
}

// documented resolves from the documented descriptors first, then from the
// compiled-in ones (health, reflection and any other registered service).
type documented struct{ files *protoregistry.Files }

func (d documented) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	if f, err := d.files.FindFileByPath(path); err == nil {
		return f, nil
	}
	return protoregistry.GlobalFiles.FindFileByPath(path)
}

func (d documented) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	if f, err := d.files.FindDescriptorByName(name); err == nil {
		return f, nil
	}
	return protoregistry.GlobalFiles.FindDescriptorByName(name)
}

// DescribesService reports whether the documented descriptors hold a service.
func DescribesService(name string) bool {
	files, err := apiFiles()
	if err != nil {
		return false
	}
	_, err = files.FindDescriptorByName(protoreflectName(name))
	return err == nil
}
func protoreflectName(s string) protoreflect.FullName { return protoreflect.FullName(s) }
