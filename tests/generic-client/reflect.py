"""A generic gRPC client that knows nothing of Xinqiao: it discovers the services through server
reflection (v1alpha, as grpcio speaks it), builds the message types from the descriptors the hub
sends, and calls DirectoryService with a certificate from the hub's PKI.

    python3 tests/generic-client/reflect.py HOST:PORT PKI_DIR

Needs: pip install grpcio grpcio-reflection protobuf
"""

import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def channel(target, pki, who):
    read = lambda name: open(f"{pki}/{name}", "rb").read()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read("ca.crt"), private_key=read(f"{who}.key"), certificate_chain=read(f"{who}.crt")
    )
    return grpc.secure_channel(target, credentials)


def main():
    target, pki = sys.argv[1], sys.argv[2]
    ch = channel(target, pki, "admin")
    db = ProtoReflectionDescriptorDatabase(ch)
    services = db.get_services()
    print("services:", ", ".join(services))
    assert "xinqiao.v1.DirectoryService" in services, services

    pool = descriptor_pool.DescriptorPool(db)
    service = pool.FindServiceByName("xinqiao.v1.DirectoryService")
    print("DirectoryService methods:", ", ".join(m.name for m in service.methods))

    def call(method_name, request_json):
        method = service.methods_by_name[method_name]
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        stub = ch.unary_unary(
            f"/{service.full_name}/{method.name}",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        request = json_format.Parse(request_json, request_cls())
        return json_format.MessageToDict(stub(request))

    print("WhoAmI:", call("WhoAmI", "{}"))
    departments = call("ListDepartments", '{"pageSize": 10}')["departments"]
    print("ListDepartments:", [d["name"] for d in departments])
    assert departments, "the dev hub registers sample departments"
    found = call("SearchEntries", '{"keyword": "营业执照"}')
    print("SearchEntries 营业执照:", [e["content"]["name"] for e in found.get("entries", [])])

    # Without a client certificate the hub refuses the handshake.
    bare = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=open(f"{pki}/ca.crt", "rb").read()))
    try:
        ProtoReflectionDescriptorDatabase(bare).get_services()
    except grpc.RpcError as e:
        print("without a certificate:", e.code())
    else:
        raise SystemExit("a client without a certificate was served")
    print("generic client: OK")


if __name__ == "__main__":
    main()
