#!/bin/sh
# One-shot `register` service: once hub-1 is healthy, the platform admin registers the sample
# departments (the ones the development PKI issued certificates to: SAMPLE_DEPARTMENTS in
# services/hub/src/pki.rs; .ci/validate-deploy checks that this list matches it) and imports the
# shared schemas, over gRPC like any admin would. Safe to run again: a registered department is
# left alone and identical schemas are not registered twice.
#
# The client reads XINQIAO_HUB, XINQIAO_PKI and XINQIAO_AS from the service's environment.
set -eu

register() {
    code=$1 name=$2 division=$3 contact=$4
    if xinqiao dept show "$code" >/dev/null 2>&1; then
        echo "register: $code ($name) is already registered"
    else
        xinqiao dept register --code "$code" --name "$name" --division "$division" --contact "$contact"
    fi
}

register 11330100MB00010011 "市市场监督管理局" 330100 "数据科 0571-00000001"
register 11330100MB0002002B "市公安局" 330100 "科信处 0571-00000002"
register 11330100MB0003003M "市人力资源和社会保障局" 330100 "信息中心 0571-00000003"

xinqiao schema import /usr/share/xinqiao/schemas
xinqiao dept list
echo "register: done"
