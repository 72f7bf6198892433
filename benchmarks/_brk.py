import torch, time, sys, collections
from benchmarks.bench_engine import K, make_data, make_net
from snnexp.training.tbptt import run_sequence
from snnexp.engine import native
import snnexp.engine.functions as fn
phase=sys.argv[1]; block=sys.argv[2] if len(sys.argv)>2 else "sew"
net = make_net(block); opt = torch.optim.Adam(net.parameters(), lr=1e-4)
frames, labels = make_data(K + 1)
optimizer = opt if phase == "train" else None
net.train(optimizer is not None)
acc=collections.defaultdict(float)
def wrap(name, f):
    def g(*a, **k):
        t=time.perf_counter(); r=f(*a, **k); acc[name]+=(time.perf_counter()-t)*1e3; return r
    return g
for n,m in net.named_modules():
    if isinstance(m,(torch.nn.Conv2d, torch.nn.MaxPool2d, torch.nn.Linear)):
        m.forward = wrap(n, m.forward)
orig_run = native.run
def run(kind, *a, **k):
    t=time.perf_counter(); r=orig_run(kind,*a,**k); acc["native."+kind+str(a[2])]+=(time.perf_counter()-t)*1e3; return r
native.run = run; fn.native.run = run
import resource
ob = fn.FusedBatchNormLIF.backward
def bw(ctx, *a):
    t=time.perf_counter(); r0=resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    r=ob(ctx,*a); acc["BNLIF.backward%d"%ctx.geo.per_step]+=(time.perf_counter()-t)*1e3; acc["faults%d"%ctx.geo.per_step]+=resource.getrusage(resource.RUSAGE_SELF).ru_minflt-r0; return r
fn.FusedBatchNormLIF.backward = staticmethod(bw)

with torch.set_grad_enabled(optimizer is not None):
    for i in range(6):
        acc.clear()
        t=time.perf_counter(); run_sequence(net, frames, labels, k=K, optimizer=optimizer); tot=(time.perf_counter()-t)*1e3
print("chunk ms %.1f" % tot)
s=0
for k,v in sorted(acc.items(), key=lambda kv:-kv[1]):
    s+=v; print(f"{k:40s} {v:7.2f}")
print("sum", s)
