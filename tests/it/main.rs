mod aws_template;
