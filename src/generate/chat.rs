//! The model's chat template (`tokenizer.chat_template`, Jinja) rendered for one user message.

use super::{GenerateError, ModelMeta};

/// Render the chat template for a single user message with the assistant turn opened
/// (`add_generation_prompt`). Without a template the prompt is used as it is.
pub fn render_user_prompt(meta: &ModelMeta, prompt: &str) -> Result<String, GenerateError> {
    let Some(template) = &meta.chat_template else {
        return Ok(prompt.to_string());
    };
    let mut env = minijinja::Environment::new();
    // HF templates call Python string methods (`.strip()`, `.startswith()`, ...).
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_template("chat", template)
        .map_err(|e| GenerateError::Template(e.to_string()))?;
    let tok = |id: Option<u32>| {
        id.and_then(|i| meta.tokens.get(i as usize))
            .cloned()
            .unwrap_or_default()
    };
    let ctx = minijinja::context! {
        messages => vec![minijinja::context! { role => "user", content => prompt }],
        add_generation_prompt => true,
        bos_token => tok(meta.bos),
        eos_token => tok(meta.eos),
    };
    env.get_template("chat")
        .and_then(|t| t.render(ctx))
        .map_err(|e| GenerateError::Template(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_template_renders_one_user_turn() {
        let meta = ModelMeta {
            chat_template: Some(
                "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}".into(),
            ),
            ..Default::default()
        };
        let got = render_user_prompt(&meta, "Hi {{ there }}").expect("renders");
        assert_eq!(
            got,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi {{ there }}<|im_end|>\n<|im_start|>assistant\n"
        );
        let none = ModelMeta::default();
        assert_eq!(render_user_prompt(&none, "x").expect("plain"), "x");
    }
}
