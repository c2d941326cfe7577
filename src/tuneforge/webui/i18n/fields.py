"""Chinese labels and help texts of the config fields, keyed like `FieldSpec.key` (English help is the schema's).

When a schema field is added, add its line here: tests/webui/test_i18n.py fails until every field has one.
"""

from __future__ import annotations

__all__ = ["EN_LABELS", "FIELDS_ZH"]

# English labels that the field name alone would spell badly (the rest: "learning_rate" → "Learning rate").
EN_LABELS: dict[str, str] = {
    "r": "LoRA rank (r)",
    "lam": "GAE λ (lam)",
    "vf_coef": "Value loss weight (vf_coef)",
    "kl_coef": "KL coefficient (kl_coef)",
    "top_p": "Top-p",
    "dtype": "Dtype",
    "cutoff_len": "Cutoff length (tokens)",
    "val_size": "Validation size",
    "max_steps": "Max steps",
    "ewc": "EWC",
    "use_dora": "DoRA",
    "use_rslora": "rsLoRA",
    "loraplus_lr_ratio": "LoRA+ learning-rate ratio",
    "hub": "Allow the Hugging Face hub",
    "name_or_path": "Model",
    "dir": "Run folder",
}

_SAMPLING = {
    "max_new_tokens": ("最大生成长度", "每个采样回答的长度上限（token 数）。"),
    "temperature": ("采样温度", "回答的采样温度（也用于计算其得分）。"),
    "top_p": ("Top-p", "核采样：只保留累计概率达到该值的最小 token 集合。"),
}

_LORA = {
    "r": ("LoRA 秩 (r)", "LoRA 的秩。"),
    "alpha": ("LoRA alpha", "LoRA 缩放分子（缩放系数 = alpha / r，或 alpha / sqrt(r)）。"),
    "dropout": ("LoRA dropout", "LoRA 输入上的 dropout（0 最快）。"),
    "target_modules": ("目标模块", "要适配的模块名，或 all-linear（除输出层外的所有线性层）。"),
    "use_dora": ("DoRA", "DoRA：分别学习每个权重的幅度和方向。"),
    "use_rslora": ("rsLoRA", "秩稳定 LoRA：按 alpha / sqrt(r) 缩放，而不是 alpha / r。"),
    "loraplus_lr_ratio": ("LoRA+ 学习率倍数", "LoRA+：B 矩阵以 learning_rate × 该倍数训练（常用 16）。"),
    "modules_to_save": ("完整训练的模块", "完整训练并随适配器一起保存的模块（如 [lm_head] 或 [embed_tokens]）。"),
}

_VIRTUAL_TOKENS = ("虚拟 token 数", "放在每个序列前面的虚拟 token 数量。")

FIELDS_ZH: dict[str, tuple[str, str]] = {
    # model
    "model.name_or_path": ("模型", "模型库名称（见 `tuneforge models`）、Hugging Face 模型文件夹或 .gguf 文件。"),
    "model.dtype": ("权重精度", "权重数据类型：auto = 在支持 bf16 的 CUDA 上用 bfloat16，否则 float32。"),
    "model.attn_implementation": ("注意力实现", "注意力计算内核。"),
    "model.trust_remote_code": ("信任远程代码", "运行模型自带的 Python 代码（默认关闭：这不安全）。"),
    "model.hub": (
        "允许 Hugging Face Hub",
        "允许从 Hugging Face Hub 下载 name_or_path（关闭时只能用本地文件夹、.gguf 文件和模型库模型；本地路径不存在即报错）。"
        "HF_HUB_OFFLINE=0 或 --online 也会允许。",
    ),
    # data
    "data.train": ("训练数据", "训练数据：文件（JSON、JSONL、CSV、Parquet、TXT）、文件夹或内置数据集名称。"),
    "data.dataset": (
        "数据集（目录）",
        "按名称使用 data.dataset_dir 中 LLaMA-Factory dataset_info.json 里的数据集（如 'a,b'）。",
    ),
    "data.dataset_dir": ("数据集目录", "包含 dataset_info.json 及其数据文件的文件夹。"),
    "data.eval": ("验证数据", "单独的验证数据（文件或名称）；设置后不再按 val_size 划分。"),
    "data.format": (
        "数据格式",
        "每行数据的格式；auto 根据每行的字段自动识别（classify 方法下为 classification：文本及其标签）。",
    ),
    "data.columns": (
        "列映射",
        "按 LLaMA-Factory 的方式重命名 data.train 文件的字段：prompt、query、response、history、messages、system、"
        "tools、chosen、rejected、kto_tag（如 {prompt: question, response: answer}）；分类数据：text、label"
        "（如 {text: review, label: sentiment}）。",
    ),
    "data.tags": (
        "ShareGPT 标签",
        "data.train 文件的 ShareGPT 角色/内容标签：role_tag、content_tag、user_tag、assistant_tag、observation_tag、"
        "function_tag、system_tag。",
    ),
    "data.template": ("对话模板", "分词器没有对话模板时使用的内置模板（chatml、llama3、mistral、gemma）。"),
    "data.cutoff_len": ("截断长度（token）", "每个样本的最大 token 数。"),
    "data.overlength": ("超长处理", "超过 cutoff_len 的样本如何处理：截断（计数）或丢弃。"),
    "data.min_tokens": ("最少 token 数", "丢弃短于该 token 数的样本。"),
    "data.val_size": ("验证集大小", "验证集划分：比例（< 1）或样本数（>= 1）；0 表示不划分。"),
    "data.variables": ("占位符变量", "数据中 {{name}} 形式占位符的取值（如 name、author）。"),
    "data.placeholders": (
        "未赋值占位符",
        "数据中的 {{name}} 在 data.variables 中没有值时：error = 丢弃该行（计数并定位），绝不训练字面占位符；"
        "keep = 按原文训练（代码、模板）。",
    ),
    "data.max_samples": ("最大样本数", "每个文件最多使用这么多行。"),
    "data.shuffle": ("随机抽样", "随机（带种子）选取 max_samples 行和混合的行，而不是取前面的行。"),
    "data.dedup": (
        "去重",
        "丢弃重复行：完全相同的行，或在统一大小写、空格和标点后相同的行；none 只报告不丢弃。",
    ),
    "data.keep_thinking": ("保留思考过程", "保留助手回答中的 <think>…</think> 推理内容。"),
    "data.train_on_prompt": ("训练提示词", "监督所有 token，包括提示词。"),
    "data.mask_history": ("只训练最后一轮", "只监督每段对话中最后一轮助手回答。"),
    "data.max_drop_ratio": ("最大丢弃比例", "不可用的行（不含重复行）超过该比例时报错停止。"),
    "data.mix_ratios": ("混合比例", "按这些比例（如 [7, 3]）采样各数据集，而不是直接拼接。"),
    "data.cache": ("缓存分词结果", "复用 $TUNEFORGE_HOME 下按内容哈希缓存的分词数据。"),
    "data.replay": (
        "自我回放",
        "对抗遗忘的自我回放：混入基座模型自己对通用提示词的回答（只生成一次，缓存在 $TUNEFORGE_HOME 下）。",
    ),
    "data.packing": ("序列打包", "把样本打包成 cutoff_len 长的序列（无填充，样本之间互不注意）。"),
    # train
    "train.learning_rate": ("学习率", "峰值学习率。"),
    "train.epochs": ("训练轮数", "遍历训练数据的次数（max_steps > 0 时忽略）。"),
    "train.max_steps": ("最大步数", "要运行的优化器步数；-1 表示按轮数计算。"),
    "train.batch_size": (
        "批大小",
        "每个微批次的行数：启用 data.packing 时为至多 cutoff_len 个 token 的打包行，否则为样本。",
    ),
    "train.grad_accum": ("梯度累积", "每个优化器步包含的微批次数。"),
    "train.max_grad_norm": ("梯度裁剪", "梯度裁剪的范数；0 表示不裁剪。"),
    "train.scheduler": ("学习率调度", "学习率调度方式。"),
    "train.warmup_ratio": ("预热比例", "线性预热的步数占比。"),
    "train.warmup_steps": ("预热步数", "线性预热的步数；设置后优先于 warmup_ratio。"),
    "train.optimizer": ("优化器", "优化器（torch.optim）；sgd 使用 0.9 动量。"),
    "train.weight_decay": ("权重衰减", "权重衰减，只作用于权重矩阵（不作用于偏置和归一化层）。"),
    "train.layer_lr_decay": (
        "逐层学习率衰减",
        "逐层学习率：最顶层解码层使用 learning_rate，往下每层乘以该衰减系数，嵌入层最小；输出层使用完整学习率。1 表示关闭。",
    ),
    "train.dtype": (
        "计算精度",
        "计算精度（autocast；训练的权重保持 float32）：auto = 在支持 bf16 的 CUDA GPU 上用 bf16，否则 fp32；"
        "fp16 需要 CUDA 并使用损失缩放。",
    ),
    "train.gradient_checkpointing": (
        "梯度检查点",
        "反向传播时重新计算激活以节省显存；auto = 在 CUDA 上对超过 10 亿参数的模型开启。",
    ),
    "train.deterministic": ("确定性训练", "逐位可复现：确定性内核、固定种子和 cuBLAS 工作区。"),
    "train.seed": ("随机种子", "数据打乱、划分和初始化使用的种子。"),
    "train.eval_steps": ("验证间隔", "每 N 个优化器步计算一次验证损失（默认：每次运行约 5 次）。"),
    "train.logging_steps": ("日志间隔", "每 N 个优化器步写一行指标。"),
    "train.num_threads": ("CPU 线程数", "PyTorch 使用的 CPU 线程数（默认：全部核心）。"),
    "train.return_freed_memory": (
        "立即归还释放的内存",
        "把释放的张量内存块（1 MiB 及以上）立即还给系统，而不是留在 C 堆中：CPU 训练的峰值 RSS 约降低 30%，每步约慢 20%，数值不变（Linux/glibc）。内存不够时使用。",
    ),
    "train.fsdp": (
        "FSDP 分片训练",
        "由启动器启动多个进程时：把训练模型的权重、梯度和优化器状态分片到各进程（FSDP 完全分片），而不是每个进程一份完整副本。distributed_type: FSDP 的 accelerate 配置会自动开启。",
    ),
    "train.early_stopping_patience": ("早停耐心值", "连续这么多次验证损失没有下降就停止，并保留最好的权重。"),
    "train.save_steps": (
        "保存间隔",
        "每 N 个优化器步保存检查点到 checkpoints/step-N（默认：每次验证时）；0 表示不定期保存。",
    ),
    "train.save_total_limit": ("最多保留检查点", "保留最新的 N 个检查点（另加最好的一个）；null 表示全部保留。"),
    "train.resume": (
        "断点续训",
        "从检查点继续：auto（或 true）= output.dir 中最新的检查点，路径 = 指定的检查点文件夹；false 表示从头开始。",
    ),
    "train.replay": (
        "数据回放",
        "持续学习：每一步都有一部分来自通用数据（{data: [file], share: 0.2}），不会有只在新数据上训练的步。",
    ),
    "train.ewc": (
        "EWC",
        "持续学习：弹性权重巩固让通用数据需要的权重保持在原值附近（{data: general_check, weight: 1000, samples: 64}）。",
    ),
    "train.report_to": ("上报到", "同时把指标上报到这些跟踪工具（需要安装对应的包）。"),
    # eval
    "eval.questions": (
        "对比问题",
        "训练前后对比用的问题（内置名称或 JSON、JSONL、CSV、Parquet 文件）；在训练结束时比较。",
    ),
    "eval.max_new_tokens": ("回答长度上限", "对比时回答的长度上限。"),
    "eval.judge": (
        "评审模型",
        "逐题判定胜/平/负的评审：任何 tuneforge 能加载的模型，或兼容 OpenAI 的接口地址（http://host:port/v1）。",
    ),
    "eval.judge_model": ("评审模型 ID", "向评审接口请求的模型 ID。"),
    "eval.judge_remote": (
        "允许远程评审",
        "允许不在本机（回环地址）上的评审接口。其 API 密钥从不从配置读取：只来自 TUNEFORGE_JUDGE_API_KEY，"
        "且只发给命令行（--judge）或 TUNEFORGE_JUDGE_URL 指定的接口。",
    ),
    "eval.general": ("通用能力集", "用于检查遗忘的通用能力测试集，对比基座与微调模型（如内置的 general_check）。"),
    "eval.general_limit": ("通用集数量", "只使用通用集的前 N 项。"),
    "eval.general_max_new_tokens": ("通用集回答长度", "通用集回答的长度上限（其答案很短）。"),
    "eval.forgetting_threshold": ("遗忘阈值", "通用准确率下降超过这么多个百分点时标记为遗忘。"),
    "eval.general_reference": (
        "通用参考答案",
        "人工撰写的通用问答（内置 general_reference 或数据文件）：比较基座与微调模型在答案上的每词元损失，"
        "衡量遗忘，不受模型回答长短和格式影响。",
    ),
    "eval.loss_threshold": ("损失阈值", "在 eval.general_reference 上的每词元损失上升超过此值时标记为遗忘。"),
    # output, plugins
    "output.dir": ("运行目录", "运行目录（配置、指标、损失曲线、模型、模型卡）。"),
    "output.overwrite": ("覆盖已完成的运行", "替换已经包含完成运行的运行目录。"),
    "plugins": (
        "插件",
        "运行可使用的自定义 Python 代码，如 GRPO 奖励函数：文件（path/to/rewards.py）或可导入的模块名。"
        "检查配置时就会导入它们，即运行其代码。",
    ),
    # adapters
    "adapter.adapter.bottleneck_size": ("瓶颈宽度", "每个适配器降维投影的宽度。"),
    "adapter.adapter.placement": ("插入位置", "在每个解码层中的位置：注意力之后、MLP 之后，或两者都有。"),
    "adapter.adapter.activation": ("激活函数", "两次投影之间的非线性函数。"),
    "adapter.freeze.trainable_layers": (
        "可训练层数",
        "训练最后 N 个解码层，其余保持冻结（设置 trainable_modules 时不使用）。",
    ),
    "adapter.freeze.trainable_modules": (
        "可训练模块",
        "不按最后几层，而是训练名称包含这些字符串之一的所有模块（如 [mlp] 或 [layers.11.self_attn, layers.10.mlp]）。",
    ),
    "adapter.freeze.train_embeddings": ("训练嵌入层", "同时训练输入嵌入（以及共享权重的输出层）。"),
    "adapter.freeze.train_head": ("训练输出层", "同时训练输出层（lm_head；共享权重时即嵌入层）。"),
    "adapter.ia3.target_modules": ("目标模块", "其激活获得可学习缩放的线性层（默认为 Llama / Qwen 的名称）。"),
    "adapter.ia3.feedforward_modules": ("前馈模块", "target_modules 中属于前馈层的那些：缩放其输入而不是输出。"),
    **{f"adapter.lora.{name}": text for name, text in _LORA.items()},
    "adapter.lora.init": (
        "初始化方式",
        "适配器初始值：default（A 随机，B 为零）、gaussian（A 高斯分布，B 为零）或 pissa（每个权重的主奇异向量；"
        "保存时转换为秩 2r 的普通 LoRA 适配器）。",
    ),
    "adapter.prefix.num_virtual_tokens": _VIRTUAL_TOKENS,
    "adapter.prefix.prefix_projection": ("前缀投影", "用一个小嵌入上的 MLP 生成前缀（P-Tuning v2 深度提示）。"),
    "adapter.prefix.encoder_hidden_size": ("MLP 隐藏层大小", "该 MLP 的隐藏层大小（启用 prefix_projection 时）。"),
    "adapter.prompt.num_virtual_tokens": _VIRTUAL_TOKENS,
    "adapter.prompt.init": ("初始化方式", "从随机词表 token 的嵌入开始，或从 init_text 的嵌入开始。"),
    "adapter.prompt.init_text": (
        "初始化文本",
        "init=text 时使用的任务描述，如 'Answer as the assistant Conch would.'",
    ),
    "adapter.ptuning.num_virtual_tokens": _VIRTUAL_TOKENS,
    "adapter.ptuning.encoder_hidden_size": ("编码器隐藏层大小", "提示编码器的隐藏层大小。"),
    "adapter.ptuning.encoder_reparameterization_type": ("编码器类型", "提示编码器：3 层 MLP，或双向 LSTM 后接 MLP。"),
    **{f"adapter.qlora.{name}": text for name, text in _LORA.items()},
    "adapter.qlora.init": ("初始化方式", "适配器初始值：default（A 随机，B 为零）或 gaussian（A 高斯分布，B 为零）。"),
    "adapter.qlora.compute_dtype": ("计算精度", "4 位量化层矩阵乘法的精度（不支持 bfloat16 的 GPU 用 float16）。"),
    # methods
    "method.distill.teacher": (
        "教师模型",
        "冻结的教师模型：模型文件夹、.gguf 文件、模型库名称或运行目录，分词器（词表）须与学生模型相同。",
    ),
    "method.distill.alpha": ("蒸馏权重 alpha", "软蒸馏（KL）项的权重；1 - alpha 为硬标签交叉熵的权重。"),
    "method.distill.temperature": ("蒸馏温度", "软项的 softmax 温度 T（其 KL 乘以 T²）；1 表示不软化。"),
    "method.distill.on_policy": (
        "在策略蒸馏",
        "广义知识蒸馏：软项取自学生模型对数据中每个提示词自己采样的回答（由教师打分），而不是数据中的回答；硬项仍在数据上。",
    ),
    "method.distill.max_new_tokens": ("采样长度上限", "学生采样的长度上限（on_policy 时）。"),
    "method.dpo.loss": (
        "损失函数",
        "sigmoid = DPO；ipo；hinge；orpo（无参考模型，几率比 + 对 chosen 回答的 SFT）；simpo（无参考模型，长度归一化，目标间隔 gamma）。",
    ),
    "method.dpo.beta": ("beta", "逆温度 β（ORPO：几率比项的权重 λ；SimPO：可试 2）。"),
    "method.dpo.label_smoothing": ("标签平滑", "假定标注错误的偏好对比例（保守 DPO / SimPO）。"),
    "method.dpo.gamma": ("gamma", "SimPO 的目标奖励间隔 γ。"),
    "method.dpo.sft_weight": ("SFT 权重", "在 chosen 回答上额外 SFT（平均负对数似然）项的权重（ORPO 已内置）。"),
    "method.dpo.precompute_reference": (
        "预计算参考分数",
        "训练前用参考模型为每个偏好对打分一次并保存：内存中无需冻结副本，每步也无需参考前向（适合全参微调）。",
    ),
    "method.grpo.num_generations": ("每个提示的采样数", "每个提示词采样的回答数 G；优势在同组内比较。"),
    **{f"method.grpo.{name}": text for name, text in _SAMPLING.items()},
    "method.grpo.beta": ("KL 权重 beta", "朝向参考模型的 KL 惩罚权重 β；0 表示不需要参考模型。"),
    "method.grpo.epsilon": ("裁剪范围 epsilon", "概率比的裁剪范围 ε。"),
    "method.grpo.rewards": (
        "奖励函数",
        "为每个回答打分的奖励，按权重求和：{name: exact_answer}、{name: format, pattern, match: search|full}、"
        "{name: length, target, scale}（字符数），或来自 plugins 模块的 {function: 'module:callable'}；每个都可设 weight。",
    ),
    "method.kto.beta": ("beta", "奖励的逆温度 β。"),
    "method.kto.desirable_weight": ("正例权重", "期望回答的损失权重 λ_D。"),
    "method.kto.undesirable_weight": ("负例权重", "不期望回答的损失权重 λ_U（某类较少时用来平衡）。"),
    **{f"method.ppo.{name}": text for name, text in _SAMPLING.items()},
    "method.ppo.kl_coef": ("KL 系数", "β：逐 token KL 惩罚的权重（自适应时为初始值）。"),
    "method.ppo.target_kl": (
        "目标 KL",
        "自适应调整 β，使到参考模型的 KL 保持在该值附近（每个回答的 nats）；null：固定 β。",
    ),
    "method.ppo.horizon": ("自适应范围", "自适应控制器完整调整 β 所跨越的回答数。"),
    "method.ppo.gamma": ("折扣因子 gamma", "未来 token 奖励的折扣 γ。"),
    "method.ppo.lam": ("GAE λ", "广义优势估计的 λ。"),
    "method.ppo.cliprange": ("策略裁剪范围", "概率比的裁剪范围。"),
    "method.ppo.cliprange_value": ("价值裁剪范围", "价值更新的裁剪范围。"),
    "method.ppo.vf_coef": ("价值损失权重", "价值损失的权重。"),
    "method.ppo.whiten": ("优势白化", "把每批的优势归一化为均值 0、标准差 1。"),
    "method.ppo.rewards": (
        "奖励函数",
        "为每个回答打分的奖励，按权重求和（同 grpo）：{name: reward_model, path: RUN}、{name: exact_answer}、"
        "{name: format, pattern}、{name: length, target} 或 {function: ...}。",
    ),
    "method.reward.center_rewards_coefficient": (
        "奖励居中系数",
        "(score_chosen + score_rejected)² 的权重，使分数以 0 为中心。",
    ),
    "method.classify.labels": (
        "类别名称",
        "按 id 顺序排列的类别名称（每行的标签是名称或指向此列表的整数 id）；"
        "null：取训练数据中出现的标签，排序后随模型保存。",
    ),
}
