import sys, time, torch, numpy as np
from gate import shapes, archs, candidate
bias=float(sys.argv[1]); out=sys.argv[2]; epochs=int(sys.argv[3]) if len(sys.argv)>3 else 4
torch.manual_seed(0); torch.set_num_threads(2)
S=shapes.generate(3000, bias=bias, seed=101)
x=torch.tensor(np.stack([s.image for s in S])).permute(0,3,1,2).float()/255; x=(x-0.5)/0.25
y=torch.tensor([s.label for s in S])
m=archs.tiny_cnn(4); opt=torch.optim.Adam(m.parameters(),3e-3)
t=time.time()
for ep in range(epochs):
    perm=torch.randperm(len(x)); m.train()
    for i in range(0,len(x),64):
        idx=perm[i:i+64]; loss=torch.nn.functional.cross_entropy(m(x[idx]),y[idx]); opt.zero_grad(); loss.backward(); opt.step()
    m.eval()
    with torch.no_grad(): acc=(m(x[:500]).argmax(1)==y[:500]).float().mean()
    print(ep, loss.item(), acc.item(), time.time()-t)
candidate.save(out, m, arch="tiny_cnn", arch_kwargs={"num_classes":4}, classes=shapes.CLASSES, input_size=(64,64), mean=(0.5,)*3, std=(0.25,)*3)
